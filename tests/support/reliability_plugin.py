"""Fault injection for train.py subprocesses: ``--plugin tests.support.reliability_plugin``.

Driven by environment variables, so the command line of a faulty run and of its rerun is the same:

- ``RELIABILITY_KILL_AT="epoch,batch"`` (1-based): SIGKILL the process at the start of that
  optimisation step of any ``ClipTrainer`` (after the forward pass, before the update);
- ``RELIABILITY_PAUSE_AT="epoch,batch"`` with ``RELIABILITY_PAUSE_DIR=DIR``: at that step create
  ``DIR/paused`` and wait (at most ``PAUSE_LIMIT_S``) until ``DIR/go`` exists.

Without these variables importing the module changes nothing.
"""

from __future__ import annotations

import os
import signal
import time

KILL_ENV = "RELIABILITY_KILL_AT"
PAUSE_ENV = "RELIABILITY_PAUSE_AT"
PAUSE_DIR_ENV = "RELIABILITY_PAUSE_DIR"
PAUSED_FILE = "paused"
GO_FILE = "go"
# Longer than any step a test takes while the job waits (tests bound those with smaller timeouts), so
# on a loaded machine the job never resumes on its own mid-check; the limit only frees an orphan.
PAUSE_LIMIT_S = 1800.0


def _step(value: str) -> tuple[int, int] | None:
    return tuple(int(v) for v in value.split(",")) if value else None  # type: ignore[return-value]


def _pause(directory: str) -> None:
    open(os.path.join(directory, PAUSED_FILE), "w").close()
    deadline = time.monotonic() + PAUSE_LIMIT_S
    while not os.path.exists(os.path.join(directory, GO_FILE)) and time.monotonic() < deadline:
        time.sleep(0.05)


def _install(kill_at: tuple[int, int] | None, pause_at: tuple[int, int] | None, pause_dir: str) -> None:
    from trainers.base import ClipTrainer

    optimize = ClipTrainer.optimize

    def faulty_optimize(self, loss, names=None):
        step = (self.epoch + 1, self.batch_idx + 1)
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if step == pause_at:
            _pause(pause_dir)
        return optimize(self, loss, names)

    ClipTrainer.optimize = faulty_optimize


_KILL_AT = _step(os.environ.get(KILL_ENV, ""))
_PAUSE_AT = _step(os.environ.get(PAUSE_ENV, ""))
if _KILL_AT or _PAUSE_AT:
    _install(_KILL_AT, _PAUSE_AT, os.environ.get(PAUSE_DIR_ENV, ""))
