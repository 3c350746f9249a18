"""Tee ``print`` output to ``OUTPUT_DIR/log.txt`` (Dassl's ``setup_logger``).

Unlike Dassl, a second run in the same folder (a resume, an evaluation) appends to
the one ``log.txt`` after a dated separator line instead of starting ``log.txt-<time>``,
so the log reads top to bottom. ``train.py`` starts the logger without a file and
attaches it once the run's inputs are known to be usable (nothing is written into
a run folder by a run that fails at start-up); what was printed before is kept.
"""

from __future__ import annotations

import io
import os.path as osp
import sys
import time
from typing import TextIO

from .tools import mkdir_if_missing


class Logger:
    """Writes everything printed to the console and to a log file (held in memory until one is attached)."""

    def __init__(self, fpath: str | None = None, console: TextIO | None = None) -> None:
        self.console = console or sys.stdout
        self.file = None
        self._pending: io.StringIO | None = io.StringIO()
        if fpath is not None:
            self.attach(fpath)

    def attach(self, fpath: str) -> None:
        """Write to ``fpath`` from now on, after what was printed so far; an existing log is appended to."""
        mkdir_if_missing(osp.dirname(fpath))
        existed = osp.isfile(fpath) and osp.getsize(fpath) > 0
        self.file = open(fpath, "a", buffering=1)  # line-buffered: a killed job's log ends at its last line
        if existed:
            self.file.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')}: another run in this folder =====\n")
        if self._pending is not None:
            self.file.write(self._pending.getvalue())
            self._pending = None

    def write(self, msg: str) -> None:
        self.console.write(msg)
        self.write_log_only(msg)

    def write_log_only(self, msg: str) -> None:
        """Text for the log file only (e.g. the full config; the console gets a short header)."""
        if self.file is not None:
            self.file.write(msg)
        elif self._pending is not None:
            self._pending.write(msg)

    def flush(self) -> None:
        self.console.flush()
        if self.file is not None:
            self.file.flush()

    def isatty(self) -> bool:
        return self.console.isatty()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self._pending = None


def log_only(text: str) -> None:
    """Print ``text`` to the log file only when stdout is a ``Logger`` (else to stdout)."""
    if isinstance(sys.stdout, Logger):
        sys.stdout.write_log_only(text + "\n")
    else:
        print(text)


def setup_logger(output: str | None = None) -> None:
    """Tee stdout into ``output/log.txt`` (appended to when it exists); ``output=""``: hold the log in memory."""
    if output is None:
        return
    console = sys.stdout.console if isinstance(sys.stdout, Logger) else sys.stdout
    pending = ""
    if isinstance(sys.stdout, Logger):
        pending = sys.stdout._pending.getvalue() if sys.stdout._pending is not None else ""
        sys.stdout.close()
    logger = Logger(console=console)
    logger.write_log_only(pending)
    if output:
        logger.attach(output if output.endswith((".txt", ".log")) else osp.join(output, "log.txt"))
    sys.stdout = logger
