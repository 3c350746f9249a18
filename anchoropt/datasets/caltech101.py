"""Caltech-101 (100 object categories; CoOp drops the two background-like ones)."""

from __future__ import annotations

from anchoropt.datasets.benchmark import BenchmarkDataset
from anchoropt.datasets.catalog import CATALOG
from anchoropt.datasets.splits import split_category_folders
from anchoropt.engine import DATASET_REGISTRY

IGNORED_CATEGORIES = ("BACKGROUND_Google", "Faces_easy")
RENAMED_CATEGORIES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}


@DATASET_REGISTRY.register()
class Caltech101(BenchmarkDataset):
    facts = CATALOG["Caltech101"]

    def build_split(self):
        return split_category_folders(self.image_dir, ignored=IGNORED_CATEGORIES, new_cnames=RENAMED_CATEGORIES)
