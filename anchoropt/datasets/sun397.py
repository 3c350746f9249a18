"""SUN397 (397 scene classes)."""

from __future__ import annotations

import os

from anchoropt.datasets.benchmark import BenchmarkDataset
from anchoropt.datasets.catalog import CATALOG
from anchoropt.datasets.files import read_lines
from anchoropt.datasets.splits import split_trainval
from anchoropt.engine import DATASET_REGISTRY, Datum
from anchoropt.errors import DataError


def sun_classname(category: str) -> str:
    """``a/apartment_building/outdoor`` -> ``outdoor apartment_building`` (CoOp's rule)."""
    return " ".join(category.split("/")[1:][::-1])


@DATASET_REGISTRY.register()
class SUN397(BenchmarkDataset):
    facts = CATALOG["SUN397"]

    def build_split(self):
        names = read_lines(os.path.join(self.dataset_dir, "ClassName.txt"), "SUN397 class list")
        cname2lab = {line[1:]: i for i, line in enumerate(names)}  # lines look like /a/abbey
        trainval = self._read_partition(cname2lab, "Training_01.txt")
        test = self._read_partition(cname2lab, "Testing_01.txt")
        train, val = split_trainval(trainval, where=os.path.join(self.dataset_dir, "Training_01.txt"))
        return train, val, test

    def _read_partition(self, cname2lab: dict[str, int], name: str) -> list:
        path = os.path.join(self.dataset_dir, name)
        items = []
        for line in read_lines(path, "SUN397 partition file"):
            imname = line[1:]  # lines look like /a/abbey/sun_xxx.jpg
            category = os.path.dirname(imname)
            if category not in cname2lab:
                raise DataError(f"{path}: class {category!r} of {line!r} is not in ClassName.txt")
            items.append(
                Datum(
                    impath=os.path.join(self.image_dir, imname),
                    label=cname2lab[category],
                    classname=sun_classname(category),
                )
            )
        return items
