"""Writing files so that a crash never leaves half of one."""

from __future__ import annotations

import os
import os.path as osp
import tempfile


def atomic_write_bytes(fpath: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``fpath`` through a temp file in the same folder and a rename.

    A reader (or a crash) sees either the old content or the new one, never a mix.
    """
    fpath = os.fspath(fpath)
    directory = osp.dirname(osp.abspath(fpath))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + osp.basename(fpath) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, fpath)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
