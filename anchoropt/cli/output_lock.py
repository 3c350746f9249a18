"""One job per output directory: a lock file held for the life of the process."""

from __future__ import annotations

import fcntl
import os
import os.path as osp
import socket
from typing import IO

from anchoropt.errors import UserError

LOCK_NAME = ".anchoropt.lock"


class OutputDirBusy(UserError):
    """Another job is writing into the same output directory."""


class OutputDirLock:
    """An exclusive ``flock`` on ``<output_dir>/.anchoropt.lock``.

    The kernel drops the lock when the process dies (even by SIGKILL), so a
    crashed job never leaves a stale lock behind; the file's content only says
    who held it last.
    """

    def __init__(self, output_dir: str) -> None:
        self.path = osp.join(output_dir, LOCK_NAME)
        self._file: IO[str] | None = None

    def acquire(self, announce: bool = True) -> "OutputDirLock":
        """Take the lock; ``announce=False`` leaves the file's content (and mtime) alone: used to make sure no
        job writes to a run before it is moved aside, without touching anything in it."""
        os.makedirs(osp.dirname(self.path), exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown process"
            f.close()
            raise OutputDirBusy(
                f"Another job ({holder}) is writing to {osp.dirname(self.path)}; wait for it to finish or "
                "choose another --output-dir"
            ) from None
        if announce:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> "OutputDirLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
