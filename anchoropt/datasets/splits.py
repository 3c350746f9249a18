"""Split files (CoOp's ``split_zhou_*.json``) and the random splits CoOp builds when a split file is missing.

A split file is ``{"train": rows, "val": rows, "test": rows}`` with rows
``[path relative to the image folder, label, class name]``. The random splits
use Python's global ``random`` in the same call order as CoOp, so the same
seed and the same image list give the same split.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import random
import warnings
from collections import defaultdict
from typing import Any, Iterable, Iterator, Mapping, Sequence

from anchoropt.datasets.files import list_images
from anchoropt.engine import Datum, write_json
from anchoropt.errors import DataError

SPLIT_KEYS = ("train", "val", "test")


def parse_rows(rows: Any, where: str) -> list[tuple[str, int, str]]:
    """Validate a list of ``[path, label, class name]`` rows."""
    if not isinstance(rows, list):
        raise DataError(f"{where}: expected a list of [path, label, class name] rows, got {type(rows).__name__}")
    out = []
    for i, row in enumerate(rows):
        if (
            not isinstance(row, (list, tuple))
            or len(row) != 3
            or not isinstance(row[0], str)
            or isinstance(row[1], bool)
            or not isinstance(row[1], int)
            or not isinstance(row[2], str)
        ):
            raise DataError(f"{where}: row {i} is {row!r}, expected [path (str), label (int), class name (str)]")
        if row[1] < 0:
            raise DataError(f"{where}: row {i} has a negative label {row[1]}")
        out.append((row[0], row[1], row[2]))
    return out


def parse_split(obj: Any, source: str) -> dict[str, list[tuple[str, int, str]]]:
    """Validate a decoded split file; a ``DataError`` naming ``source`` and what is wrong."""
    if not isinstance(obj, Mapping):
        raise DataError(
            f"{source}: expected a JSON object with 'train', 'val' and 'test' lists, got {type(obj).__name__}"
        )
    absent = [k for k in SPLIT_KEYS if k not in obj]
    if absent:
        raise DataError(
            f"{source}: missing the {', '.join(repr(k) for k in absent)} list(s) (a split file holds "
            f"'train', 'val' and 'test' lists of [path, label, class name] rows)"
        )
    split = {k: parse_rows(obj[k], f"{source} [{k!r}]") for k in SPLIT_KEYS}
    if not split["train"] or not split["test"]:
        raise DataError(f"{source}: the 'train' and 'test' lists must not be empty")
    return split


def load_json(filepath: str, what: str) -> Any:
    try:
        with open(filepath, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        raise DataError(f"{what} not found: {filepath}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(
            f"{what} {filepath} is not valid JSON ({e}); delete it or replace it with a good copy"
        ) from None
    except OSError as e:
        raise DataError(f"Cannot read {what} {filepath}: {e}") from None


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building large lists of ``Datum``.

    Every few hundred allocations the collector scans all tracked objects, so
    building ImageNet's 1.28 M items takes ~4x longer with it running. The
    items hold no reference cycles, so nothing is lost by pausing it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def rows_to_items(rows: Iterable[Sequence], image_dir: str) -> list:
    with paused_gc():
        return [
            Datum(impath=os.path.join(image_dir, path), label=int(label), classname=classname)
            for path, label, classname in rows
        ]


def relative_path(impath: str, image_dir: str) -> str:
    """``impath`` relative to ``image_dir`` when it lies inside it (CoOp's rule), else unchanged."""
    prefix = image_dir.rstrip(os.sep) + os.sep
    return impath[len(prefix) :] if impath.startswith(prefix) else impath


def items_to_rows(items: Iterable[Any], image_dir: str) -> list[list]:
    return [[relative_path(item.impath, image_dir), item.label, item.classname] for item in items]


def read_split(filepath: str, image_dir: str) -> tuple[list, list, list]:
    """Train, val and test ``Datum`` lists from a split file; paths are joined to ``image_dir``."""
    print(f"Reading split from {filepath}")
    split = parse_split(load_json(filepath, "Split file"), filepath)
    return tuple(rows_to_items(split[k], image_dir) for k in SPLIT_KEYS)  # type: ignore[return-value]


def save_split(train: Sequence, val: Sequence, test: Sequence, filepath: str, image_dir: str) -> bool:
    """Write a split file atomically; on a read-only data root warn and return False."""
    split = {k: items_to_rows(v, image_dir) for k, v in zip(SPLIT_KEYS, (train, val, test))}
    try:
        write_json(split, filepath)
    except OSError as e:
        warnings.warn(f"Could not save the split to {filepath} ({e}); it will be rebuilt on the next run")
        return False
    print(f"Saved split to {filepath}")
    return True


def split_trainval(trainval: Sequence, p_val: float = 0.2, where: str = "trainval") -> tuple[list, list]:
    """Hold out ``round(n * p_val)`` random images of each class for validation (CoOp's rule)."""
    print(f"Splitting trainval into {1 - p_val:.0%} train and {p_val:.0%} val")
    by_label: dict[int, list[int]] = defaultdict(list)
    for idx, item in enumerate(trainval):
        by_label[item.label].append(idx)
    train, val = [], []
    for label, idxs in by_label.items():
        n_val = round(len(idxs) * p_val)
        if n_val < 1:
            raise DataError(
                f"{where}: class {label} ({trainval[idxs[0]].classname!r}) has {len(idxs)} image(s), "
                f"too few to hold out {p_val:.0%} for validation"
            )
        random.shuffle(idxs)
        for n, idx in enumerate(idxs):
            (val if n < n_val else train).append(trainval[idx])
    return train, val


def split_groups(
    groups: Iterable[tuple[int, str, list[str]]], p_trn: float = 0.5, p_val: float = 0.2, where: str = ""
) -> tuple[list, list, list]:
    """Shuffle each class's images and cut them into train / val / test (CoOp's 50/20/30 rule).

    ``groups`` yields ``(label, class name, image paths)`` in the order CoOp
    visits the classes (the shuffles consume the random stream in that order).
    """
    print(f"Splitting into {p_trn:.0%} train, {p_val:.0%} val, and {1 - p_trn - p_val:.0%} test")
    train, val, test = [], [], []
    for label, classname, impaths in groups:
        impaths = list(impaths)
        random.shuffle(impaths)
        n_total = len(impaths)
        n_train, n_val = round(n_total * p_trn), round(n_total * p_val)
        if n_train < 1 or n_val < 1 or n_total - n_train - n_val < 1:
            raise DataError(
                f"{where}: class {classname!r} has {n_total} image(s), too few for a "
                f"{p_trn:.0%}/{p_val:.0%}/{1 - p_trn - p_val:.0%} train/val/test split"
            )

        def _items(paths: list[str]) -> list:
            return [Datum(impath=p, label=label, classname=classname) for p in paths]

        train += _items(impaths[:n_train])
        val += _items(impaths[n_train : n_train + n_val])
        test += _items(impaths[n_train + n_val :])
    return train, val, test


def split_category_folders(
    image_dir: str,
    ignored: Iterable[str] = (),
    new_cnames: Mapping[str, str] | None = None,
    p_trn: float = 0.5,
    p_val: float = 0.2,
) -> tuple[list, list, list]:
    """A random split of ``image_dir/<category>/<image>`` (labels follow the sorted category names)."""
    ignored = set(ignored)
    categories = sorted(
        c
        for c in os.listdir(image_dir)
        if not c.startswith(".") and c not in ignored and os.path.isdir(os.path.join(image_dir, c))
    )
    if not categories:
        raise DataError(f"{image_dir}: no category folders found (expected one folder of images per class)")
    new_cnames = new_cnames or {}

    def _groups():
        for label, category in enumerate(categories):
            folder = os.path.join(image_dir, category)
            yield label, new_cnames.get(category, category), [os.path.join(folder, n) for n in list_images(folder)]

    return split_groups(_groups(), p_trn, p_val, where=image_dir)
