"""The loading flow shared by the 11 few-shot benchmarks (CoOp's order of steps).

1. find the dataset folder; 2. read the full train / val / test lists (from
the split file; when it is missing, an error, or with
``DATASET.RANDOM_SPLIT_IF_MISSING True`` a random split built and saved as
CoOp does); 3. few-shot sample per seed (cached); 4. keep the base or new
classes; 5. check, in bulk, that the images that will be used exist.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from anchoropt.datasets.catalog import FEWSHOT_DIR, DatasetFacts
from anchoropt.datasets.fewshot import fewshot_cache_path, fewshot_splits, reseed
from anchoropt.datasets.files import check_images_exist, dataset_folder, missing_entries, require_entries
from anchoropt.datasets.splits import read_split, save_split
from anchoropt.datasets.subsample import check_subsample, subsample_classes
from anchoropt.engine import DatasetBase
from anchoropt.errors import DataError

RANDOM_SPLIT_KEY = "DATASET.RANDOM_SPLIT_IF_MISSING"


class BenchmarkDataset(DatasetBase):
    """A few-shot benchmark dataset; subclasses set ``facts`` and implement ``build_split``."""

    facts: DatasetFacts

    def __init__(self, cfg: Any) -> None:
        facts = self.facts
        subsample = check_subsample(cfg.DATASET.SUBSAMPLE_CLASSES)
        self.dataset_dir = dataset_folder(cfg, facts)
        self.root = os.path.dirname(self.dataset_dir)
        self.image_dir = os.path.join(self.dataset_dir, facts.image_dir) if facts.image_dir else self.dataset_dir
        self.split_path = os.path.join(self.dataset_dir, facts.split.path) if facts.split else ""
        self.split_fewshot_dir = os.path.join(self.dataset_dir, FEWSHOT_DIR)
        # A config from CoOp's or Dassl's own train.py lacks the key: the default (an error) applies.
        self.random_split_if_missing = bool(cfg.DATASET.get("RANDOM_SPLIT_IF_MISSING", False))
        require_entries(facts, self.dataset_dir, facts.required)
        reseed(cfg.SEED)

        train, val, test = self.read_full_splits()
        val_is_test = val is None  # ImageNet: the val set is the test set, not sampled
        num_shots = cfg.DATASET.NUM_SHOTS
        if num_shots >= 1:
            cache = fewshot_cache_path(self.dataset_dir, num_shots, cfg.SEED)
            train, val = fewshot_splits(
                self, train, val, num_shots=num_shots, seed=cfg.SEED, cache_path=cache, image_dir=self.image_dir
            )
        if val_is_test:
            train, test = subsample_classes(train, test, subsample=subsample)
            val = test
        else:
            train, val, test = subsample_classes(train, val, test, subsample=subsample)
        self.check_images(train, val, test, num_shots)
        super().__init__(train_x=train, val=val, test=test)

    @property
    def source_description(self) -> str:
        """Where the image lists come from, for error messages."""
        return self.split_path or self.dataset_dir

    def read_full_splits(self) -> tuple[list, list | None, list]:
        """Full train / val / test lists: the split file; without it, a new random split (saved) only when
        ``DATASET.RANDOM_SPLIT_IF_MISSING`` is True."""
        if os.path.exists(self.split_path):
            return read_split(self.split_path, self.image_dir)
        facts = self.facts
        fetch = f"fetch it with `anchoropt-prepare-data --root {self.root} --datasets {facts.name} --download-splits`"
        if not self.random_split_if_missing:
            raise DataError(
                f"{facts.name}: split file not found: {self.split_path} (expected CoOp's {facts.split.path}, which "
                f"fixes the train/val/test images of the published protocol); {fetch}, or set "
                f"{RANDOM_SPLIT_KEY} True to build a new random split as CoOp does (results then are not comparable "
                "with published numbers)"
            )
        absent = missing_entries(self.dataset_dir, facts.split_sources)
        if absent:
            listed = ", ".join(os.path.join(self.dataset_dir, e.path) for e in absent)
            raise DataError(
                f"{facts.name}: split file not found: {self.split_path} (expected CoOp's {facts.split.path}; {fetch}), "
                f"and the files a new split would be built from ({RANDOM_SPLIT_KEY} True) are missing too: {listed}"
            )
        warnings.warn(
            f"{facts.name}: {self.split_path} not found; building a new random split as CoOp does "
            f"({RANDOM_SPLIT_KEY} True). Results will not be comparable with published numbers, which use CoOp's "
            f"split file ({fetch})"
        )
        train, val, test = self.build_split()
        save_split(train, val, test, self.split_path, self.image_dir)
        return train, val, test

    def build_split(self) -> tuple[list, list, list]:
        raise NotImplementedError

    def check_images(self, train: list, val: list, test: list, num_shots: int) -> None:
        """One bulk check of the images this run uses (a listing per class folder, not a stat per image)."""
        items = list(train) + (list(val) if val is not test else []) + list(test)
        check_images_exist(self.facts, items, self.image_dir, self.source_description, self.root)
