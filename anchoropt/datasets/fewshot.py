"""Few-shot sampling per seed, cached as ``split_fewshot/shot_{K}-seed_{S}.json``.

CoOp caches a pickle of ``Datum`` objects with absolute paths: unpickling runs
arbitrary code and the cache breaks when the data root moves. This cache is
JSON with paths relative to the dataset's image folder, written atomically,
and carries a digest of the split it was drawn from, so a split that changes
(e.g. a generated split replaced by CoOp's file) is resampled rather than
silently mixed with a stale sample.

Seeding: ``train.py`` calls ``set_random_seed(cfg.SEED)`` right before the
trainer builds its data, and nothing draws from Python's ``random`` in
between. ``reseed`` re-applies the same seed when a dataset starts its random
work, which leaves the stream exactly where CoOp's sampling finds it (the same
images for a seed, cache or no cache), and makes the sample independent of
whatever drew random numbers earlier in the process. A negative seed means
"not seeded", as in CoOp: the stream is left alone, and (also as in CoOp)
the first sample drawn is cached as ``seed_-1`` and reused.
"""

from __future__ import annotations

import hashlib
import os
import random
import warnings
from array import array
from typing import Any, Sequence

from anchoropt.datasets.catalog import FEWSHOT_DIR
from anchoropt.datasets.splits import items_to_rows, load_json, parse_rows, rows_to_items
from anchoropt.engine import write_json
from anchoropt.errors import DataError

CACHE_FORMAT = "anchoropt-fewshot/1"
VAL_SHOTS_MAX = 4  # CoOp samples min(K, 4) validation images per class


def reseed(seed: int) -> None:
    """Seed Python's global ``random`` (used by the split and few-shot sampling) when ``seed >= 0``."""
    if seed >= 0:
        random.seed(seed)


def fewshot_cache_path(dataset_dir: str, num_shots: int, seed: int) -> str:
    return os.path.join(dataset_dir, FEWSHOT_DIR, f"shot_{num_shots}-seed_{seed}.json")


def split_digest(image_dir: str, *splits: Sequence[Any] | None) -> str:
    """A digest of the (relative path, label) lists the sample is drawn from."""
    h = hashlib.sha256()
    prefix = image_dir.rstrip(os.sep) + os.sep
    for items in splits:
        h.update(b"\x1e")
        if items is None:
            continue
        # Whole-list operations: this runs on every start, over 1.28 M items for ImageNet.
        h.update("\n".join([it.impath for it in items]).replace(prefix, "").encode("utf-8"))
        h.update(array("q", [it.label for it in items]).tobytes())
    return h.hexdigest()


def fewshot_splits(
    dataset: Any,
    train: Sequence[Any],
    val: Sequence[Any] | None,
    *,
    num_shots: int,
    seed: int,
    cache_path: str,
    image_dir: str,
) -> tuple[list, list | None]:
    """``num_shots`` training and ``min(num_shots, 4)`` validation items per class, from the cache or sampled.

    ``dataset.generate_fewshot_dataset`` does the sampling (Dassl's, on
    Python's global ``random``). ``val=None`` (ImageNet, whose test set is its
    validation set) samples training data only.
    """
    digest = split_digest(image_dir, train, val)
    cached = _read_cache(cache_path, num_shots, seed, digest, image_dir, want_val=val is not None)
    if cached is not None:
        return cached
    train_fs = dataset.generate_fewshot_dataset(train, num_shots=num_shots)
    val_fs = None if val is None else dataset.generate_fewshot_dataset(val, num_shots=min(num_shots, VAL_SHOTS_MAX))
    payload = {
        "format": CACHE_FORMAT,
        "num_shots": num_shots,
        "seed": seed,
        "split_digest": digest,
        "train": items_to_rows(train_fs, image_dir),
        "val": None if val_fs is None else items_to_rows(val_fs, image_dir),
    }
    try:
        write_json(payload, cache_path)
        print(f"Saving preprocessed few-shot data to {cache_path}")
    except OSError as e:
        warnings.warn(f"Could not write the few-shot cache {cache_path} ({e}); the sample is drawn again next run")
    return train_fs, val_fs


def _read_cache(
    path: str, num_shots: int, seed: int, digest: str, image_dir: str, want_val: bool
) -> tuple[list, list | None] | None:
    if not os.path.exists(path):
        return None
    try:
        data = load_json(path, "Few-shot cache")
        problem = _cache_problem(data, num_shots, seed, digest, want_val)
        if problem is None:
            train = rows_to_items(parse_rows(data["train"], f"{path} ['train']"), image_dir)
            val = rows_to_items(parse_rows(data["val"], f"{path} ['val']"), image_dir) if want_val else None
            print(f"Loading preprocessed few-shot data from {path}")
            return train, val
    except DataError as e:
        problem = str(e)
    warnings.warn(f"Ignoring the few-shot cache {path}: {problem}; sampling again")
    return None


def _cache_problem(data: Any, num_shots: int, seed: int, digest: str, want_val: bool) -> str | None:
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        return f"not a {CACHE_FORMAT} file"
    if data.get("num_shots") != num_shots or data.get("seed") != seed:
        return f"it holds {data.get('num_shots')} shots for seed {data.get('seed')}, not {num_shots} for seed {seed}"
    if data.get("split_digest") != digest:
        return "the split it was drawn from has changed"
    if want_val and data.get("val") is None:
        return "it has no validation sample"
    return None
