"""The on-disk feature cache: one directory per key, filled once, read memory-mapped.

Layout under the cache root (``FEATURE_CACHE.DIR``, else ``$ANCHOROPT_FEATURE_CACHE``, else
``$XDG_CACHE_HOME/anchoropt/features``, else ``~/.cache/anchoropt/features``)::

    <key>/features.pt    {"features": float32 [N, e]}, torch.save format, loaded with mmap=True
    <key>/meta.json      what the key stands for (readable), sizes, creation time; written last
    <key>.lock           flock'ed by the job filling <key>

An entry is complete when its ``meta.json`` exists and matches its ``features.pt``; both are
written through a temporary file and a rename, the features first, so a crash or a concurrent
reader never sees half an entry. Jobs that want the same missing entry at once serialise on the
lock: the first encodes and writes, the others wait and then read what it wrote. Where the file
system has no ``flock`` they each encode and the renames leave one complete entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import os.path as osp
import shutil
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from anchoropt.features.identity import FEATURE_FORMAT_VERSION
from anchoropt.fileio import atomic_write_bytes

FEATURES_FILE = "features.pt"
META_FILE = "meta.json"
LOCK_SUFFIX = ".lock"
ENV_VAR = "ANCHOROPT_FEATURE_CACHE"


def default_cache_root() -> str:
    """``$ANCHOROPT_FEATURE_CACHE``, else ``$XDG_CACHE_HOME/anchoropt/features``, else ``~/.cache/...``."""
    if os.environ.get(ENV_VAR):
        return osp.expanduser(os.environ[ENV_VAR])
    base = os.environ.get("XDG_CACHE_HOME") or osp.join(osp.expanduser("~"), ".cache")
    return osp.join(base, "anchoropt", "features")


def format_size(num_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if num_bytes < 1024 or unit == "GiB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    raise AssertionError("unreachable")


@dataclass
class CacheEntry:
    """A complete entry: its directory and its meta data."""

    directory: str
    meta: dict[str, Any]

    @property
    def key(self) -> str:
        return osp.basename(self.directory)

    @property
    def features_path(self) -> str:
        return osp.join(self.directory, FEATURES_FILE)

    @property
    def size_bytes(self) -> int:
        return int(self.meta.get("file_bytes", 0))

    @property
    def last_used(self) -> float:
        """When it was written or last read (the mtime of its meta file, touched on every hit)."""
        try:
            return osp.getmtime(osp.join(self.directory, META_FILE))
        except OSError:
            return 0.0

    def load(self) -> torch.Tensor:
        """The features [N, e], memory-mapped (pages are read as they are used)."""
        data = torch.load(self.features_path, map_location="cpu", mmap=True, weights_only=True)
        features = data["features"] if isinstance(data, dict) else None
        expected = (int(self.meta["num_images"]), int(self.meta["dim"]))
        if not isinstance(features, torch.Tensor) or tuple(features.shape) != expected:
            raise ValueError(f"{self.features_path} does not hold a float tensor of shape {expected}")
        return features

    def touch(self) -> None:
        with contextlib.suppress(OSError):  # a read-only cache is still usable
            os.utime(osp.join(self.directory, META_FILE))


class FeatureStore:
    """A cache root holding entries by key (see the module docstring)."""

    def __init__(self, root: str) -> None:
        self.root = osp.abspath(osp.expanduser(root))

    def entry_dir(self, key: str) -> str:
        return osp.join(self.root, key)

    def lock_path(self, key: str) -> str:
        return self.entry_dir(key) + LOCK_SUFFIX

    # ---- reading ------------------------------------------------------------------------
    def lookup(self, key: str) -> CacheEntry | None:
        """The complete entry for `key`, or None (absent, unfinished, or not matching its meta)."""
        directory = self.entry_dir(key)
        meta = _read_meta(directory)
        if meta is None or meta.get("key") != key or meta.get("format") != FEATURE_FORMAT_VERSION:
            return None
        try:
            if osp.getsize(osp.join(directory, FEATURES_FILE)) != int(meta.get("file_bytes", -1)):
                return None
        except OSError:
            return None
        return CacheEntry(directory, meta)

    def load(self, key: str) -> tuple[torch.Tensor, CacheEntry] | None:
        entry = self.lookup(key)
        if entry is None:
            return None
        try:
            features = entry.load()
        except (OSError, RuntimeError, ValueError, KeyError) as error:
            print(f"Feature cache entry {entry.directory} is unreadable ({error}); encoding again")
            return None
        entry.touch()
        return features, entry

    # ---- filling ------------------------------------------------------------------------
    def get_or_fill(
        self, key: str, describe: dict[str, Any], fill: Callable[[], torch.Tensor]
    ) -> tuple[torch.Tensor, str, CacheEntry | None]:
        """(features, how, entry): ``how`` is "hit" (read), "filled" (encoded by `fill` and written) or
        "unwritten" (encoded; the cache could not be written, e.g. a read-only root)."""
        found = self.load(key)
        if found is not None:
            return found[0], "hit", found[1]
        with self._fill_lock(key):
            found = self.load(key)  # another job may have filled it while this one waited
            if found is not None:
                return found[0], "hit", found[1]
            features = fill().detach().to("cpu", torch.float32).contiguous()
            try:
                entry = self.write(key, features, describe)
            except OSError as error:
                print(f"Warning: the feature cache could not be written under {self.root} ({error}); continuing")
                return features, "unwritten", None
            return features, "filled", entry

    def write(self, key: str, features: torch.Tensor, describe: dict[str, Any]) -> CacheEntry:
        """Write an entry: features first, meta last (its presence marks the entry complete)."""
        directory = self.entry_dir(key)
        buffer = io.BytesIO()
        torch.save({"features": features}, buffer)
        data = buffer.getvalue()
        atomic_write_bytes(osp.join(directory, FEATURES_FILE), data)
        meta = {
            **describe,
            "key": key,
            "format": FEATURE_FORMAT_VERSION,
            "num_images": int(features.shape[0]),
            "dim": int(features.shape[1]),
            "dtype": str(features.dtype),
            "file_bytes": len(data),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_bytes(osp.join(directory, META_FILE), json.dumps(meta, indent=1, default=repr).encode())
        return CacheEntry(directory, meta)

    @contextlib.contextmanager
    def _fill_lock(self, key: str) -> Iterator[None]:
        """Hold `key`'s lock (blocking; a kernel flock, so a killed job never leaves it held)."""
        try:
            os.makedirs(self.root, exist_ok=True)
            handle = open(self.lock_path(key), "a+")
        except OSError:
            yield  # no lock possible (read-only root): fill unlocked; the write reports the problem
            return
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"Waiting for another job filling the feature cache entry {self.entry_dir(key)}")
                fcntl.flock(handle, fcntl.LOCK_EX)
            except OSError:  # no flock on this file system: renames still leave one complete entry
                yield
                return
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def is_being_filled(self, key: str) -> bool:
        """Whether a job holds `key`'s lock right now."""
        try:
            with open(self.lock_path(key), "a+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(handle, fcntl.LOCK_UN)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False

    # ---- listing and pruning ------------------------------------------------------------
    def entries(self) -> list[CacheEntry]:
        """Complete entries, most recently used first."""
        found = []
        for name in self._entry_names():
            entry = self.lookup(name)
            if entry is not None:
                found.append(entry)
        return sorted(found, key=lambda e: e.last_used, reverse=True)

    def unusable(self) -> list[str]:
        """Entry directories no job is filling that cannot be read: left by a crash, or of an older format."""
        return [
            self.entry_dir(name)
            for name in self._entry_names()
            if self.lookup(name) is None and not self.is_being_filled(name)
        ]

    def remove(self, directory: str) -> int:
        """Delete an entry directory (and its lock file); returns the bytes freed."""
        freed = tree_size(directory)
        shutil.rmtree(directory, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.remove(directory + LOCK_SUFFIX)
        return freed

    def _entry_names(self) -> list[str]:
        if not osp.isdir(self.root):
            return []
        return sorted(name for name in os.listdir(self.root) if osp.isdir(osp.join(self.root, name)))


def _read_meta(directory: str) -> dict[str, Any] | None:
    try:
        with open(osp.join(directory, META_FILE)) as handle:
            meta = json.load(handle)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def tree_size(directory: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(directory):
        for name in files:
            with contextlib.suppress(OSError):
                total += osp.getsize(osp.join(dirpath, name))
    return total
