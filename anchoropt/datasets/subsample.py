"""Base / new class subsets for the base-to-novel protocol (``DATASET.SUBSAMPLE_CLASSES``)."""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

from anchoropt.engine import Datum
from anchoropt.errors import ConfigError

SUBSAMPLE_CHOICES = ("all", "base", "new")


def check_subsample(value: Any) -> str:
    """The validated ``DATASET.SUBSAMPLE_CLASSES`` value."""
    if value not in SUBSAMPLE_CHOICES:
        raise ConfigError(f"DATASET.SUBSAMPLE_CLASSES must be one of {', '.join(SUBSAMPLE_CHOICES)}, got {value!r}")
    return value


def warn_subsample_ignored(cfg: Any, dataset_name: str, why: str = "") -> None:
    """Test-only datasets (the ImageNet variants, the toy world's shifted copies) are scored on all their
    classes: a base/new request is validated, then ignored with a warning."""
    if check_subsample(cfg.DATASET.SUBSAMPLE_CLASSES) != "all":
        warnings.warn(
            f"{dataset_name} is a test-only dataset evaluated on all its classes; "
            f"DATASET.SUBSAMPLE_CLASSES={cfg.DATASET.SUBSAMPLE_CLASSES} is ignored{why}"
        )


def base_new_labels(labels: Sequence[int]) -> tuple[list[int], list[int]]:
    """Sorted labels split into base (the first ceil(n/2)) and new (the rest)."""
    ordered = sorted(set(labels))
    m = math.ceil(len(ordered) / 2)
    return ordered[:m], ordered[m:]


def subsample_classes(*splits: Sequence[Any], subsample: str = "all") -> list[list]:
    """Keep the base or new classes of every split (chosen from the first split's labels), relabelled from 0."""
    check_subsample(subsample)
    if subsample == "all":
        return [list(s) for s in splits]
    base, new = base_new_labels([item.label for item in splits[0]])
    selected = base if subsample == "base" else new
    print(f"SUBSAMPLE {subsample.upper()} CLASSES!")
    relabel = {label: i for i, label in enumerate(selected)}
    return [
        [
            Datum(impath=item.impath, label=relabel[item.label], classname=item.classname)
            for item in split
            if item.label in relabel
        ]
        for split in splits
    ]
