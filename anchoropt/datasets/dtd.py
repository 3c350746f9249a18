"""Describable Textures (47 texture classes)."""

from __future__ import annotations

from anchoropt.datasets.benchmark import BenchmarkDataset
from anchoropt.datasets.catalog import CATALOG
from anchoropt.datasets.splits import split_category_folders
from anchoropt.engine import DATASET_REGISTRY


@DATASET_REGISTRY.register()
class DescribableTextures(BenchmarkDataset):
    facts = CATALOG["DescribableTextures"]

    def build_split(self):
        return split_category_folders(self.image_dir)
