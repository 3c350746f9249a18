"""One job per output directory: a lock file held for the life of the process.

A run must not leave anything in a run folder when it fails at start-up (a bad
dataset, a typo in a key): ``check_creatable`` tests the folder early without
creating it, ``OutputDirLock`` locks a folder that already exists at once (so a
second job fails fast) and creates a new one only in ``commit``, once the run's
inputs are known to be usable. Until then, ``release`` removes the lock file it
created.
"""

from __future__ import annotations

import errno
import fcntl
import os
import os.path as osp
import socket
import tempfile
from typing import IO

from anchoropt.errors import UserError

LOCK_NAME = ".anchoropt.lock"


class OutputDirBusy(UserError):
    """Another job is writing into the same output directory."""


class OutputDirError(UserError):
    """The output directory cannot be created or written to."""


def _reason(e: OSError) -> str:
    return (e.strerror or str(e)).lower()


def check_creatable(output_dir: str) -> None:
    """Raise ``OutputDirError`` when ``output_dir`` cannot be created (or written to), without creating it."""
    path = osp.abspath(output_dir)
    if osp.isdir(path):
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputDirError(f"cannot write to output directory {output_dir}: permission denied")
        return
    if osp.lexists(path):
        raise OutputDirError(f"cannot create output directory {output_dir}: {path} exists and is not a directory")
    parent = osp.dirname(path)
    while not osp.lexists(parent):
        parent = osp.dirname(parent)
    if not osp.isdir(parent):
        raise OutputDirError(f"cannot create output directory {output_dir}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputDirError(f"cannot create output directory {output_dir}: permission denied in {parent}")
    try:  # access() does not see read-only mounts, /proc or what root may not do: try it (beside the run folder)
        os.rmdir(tempfile.mkdtemp(prefix=".anchoropt-probe-", dir=parent))
    except OSError as e:
        raise OutputDirError(f"cannot create output directory {output_dir}: {_reason(e)} in {parent}") from None


def make_output_dir(output_dir: str) -> None:
    """``os.makedirs`` with its failures as one ``OutputDirError`` line."""
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
        where = ""
        if e.errno == errno.ENOTDIR:
            where = " (a part of the path is a file, not a directory)"
        raise OutputDirError(f"cannot create output directory {output_dir}: {_reason(e)}{where}") from None


class OutputDirLock:
    """An exclusive ``flock`` on ``<output_dir>/.anchoropt.lock``.

    The kernel drops the lock when the process dies (even by SIGKILL), so a
    crashed job never leaves a stale lock behind; the file's content only says
    who held it last (written by ``commit``: a run that never starts changes nothing).
    """

    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir
        self.path = osp.join(output_dir, LOCK_NAME)
        self._file: IO[str] | None = None
        self._created_file = False
        self.committed = False

    def acquire(self) -> "OutputDirLock":
        """Lock now when the folder exists (creating nothing else); otherwise wait for ``commit``."""
        if osp.isdir(self.output_dir):
            self._lock()
        else:
            check_creatable(self.output_dir)
        return self

    def _lock(self) -> None:
        existed = osp.exists(self.path)
        try:
            f = open(self.path, "a+")
        except OSError as e:
            raise OutputDirError(f"cannot write to output directory {self.output_dir}: {_reason(e)}") from None
        self._created_file = not existed
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown process"
            f.close()
            raise OutputDirBusy(
                f"Another job ({holder}) is writing to {self.output_dir}; wait for it to finish or "
                "choose another --output-dir"
            ) from None
        self._file = f

    def commit(self) -> None:
        """The run starts writing: create the folder if needed, hold the lock, record who holds it."""
        if self._file is None:
            make_output_dir(self.output_dir)
            self._lock()
        f = self._file
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        self.committed = True

    def release(self) -> None:
        if self._file is not None:
            if not self.committed and self._created_file:  # the run never started: leave the folder as it was
                os.remove(self.path)
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> "OutputDirLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
