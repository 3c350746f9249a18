"""Oxford Flowers-102."""

from __future__ import annotations

import os
from collections import defaultdict

from anchoropt.datasets.benchmark import BenchmarkDataset
from anchoropt.datasets.catalog import CATALOG
from anchoropt.datasets.files import read_mat
from anchoropt.datasets.splits import load_json, split_groups
from anchoropt.engine import DATASET_REGISTRY
from anchoropt.errors import DataError


@DATASET_REGISTRY.register()
class OxfordFlowers(BenchmarkDataset):
    facts = CATALOG["OxfordFlowers"]

    def build_split(self):
        label_file = os.path.join(self.dataset_dir, "imagelabels.mat")
        names_file = os.path.join(self.dataset_dir, "cat_to_name.json")
        labels = read_mat(label_file, "labels", "Flowers-102 image labels").reshape(-1)
        lab2cname = load_json(names_file, "Flowers-102 class-name file")
        # Images are image_00001.jpg ... in label-file order; classes are visited in order of first appearance.
        by_label: dict[int, list[str]] = defaultdict(list)
        for i, label in enumerate(labels):
            by_label[int(label)].append(os.path.join(self.image_dir, f"image_{i + 1:05d}.jpg"))
        unnamed = [str(label) for label in by_label if str(label) not in lab2cname]
        if unnamed:
            raise DataError(
                f"{names_file}: no class name for label(s) {', '.join(unnamed)} (expected keys '1'..'{max(by_label)}')"
            )
        groups = ((label - 1, lab2cname[str(label)], paths) for label, paths in by_label.items())
        return split_groups(groups, where=label_file)
