"""Writing files so that a crash never leaves half of one."""

from __future__ import annotations

import os
import os.path as osp
import tempfile


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` as the process umask leaves it for a new file (what ``open`` would create)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def atomic_write_bytes(fpath: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``fpath`` through a temp file in the same folder and a rename.

    A reader (or a crash) sees either the old content or the new one, never a mix. The file
    gets the permissions ``open`` would give it (``mkstemp`` creates 0600 files, which other
    users of a shared results or data folder could not read).
    """
    fpath = os.fspath(fpath)
    directory = osp.dirname(osp.abspath(fpath))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + osp.basename(fpath) + ".", suffix=".tmp")
    try:
        os.fchmod(fd, umask_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, fpath)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
