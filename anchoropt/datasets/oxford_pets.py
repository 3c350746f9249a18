"""Oxford-IIIT Pets (37 breeds)."""

from __future__ import annotations

import os

from anchoropt.datasets.benchmark import BenchmarkDataset
from anchoropt.datasets.catalog import CATALOG
from anchoropt.datasets.files import read_lines
from anchoropt.datasets.splits import split_trainval
from anchoropt.engine import DATASET_REGISTRY, Datum
from anchoropt.errors import DataError


def pets_breed(image_name: str) -> str:
    """The class name CoOp derives from an image name: ``american_bulldog_10`` -> ``american_bulldog``."""
    return "_".join(image_name.split("_")[:-1]).lower()


@DATASET_REGISTRY.register()
class OxfordPets(BenchmarkDataset):
    facts = CATALOG["OxfordPets"]

    def build_split(self):
        trainval = self._read_annotations("trainval.txt")
        test = self._read_annotations("test.txt")
        train, val = split_trainval(trainval, where=os.path.join(self.dataset_dir, "annotations", "trainval.txt"))
        return train, val, test

    def _read_annotations(self, name: str) -> list:
        path = os.path.join(self.dataset_dir, "annotations", name)
        items = []
        for n, line in enumerate(read_lines(path, "OxfordPets annotation list")):
            fields = line.split(" ")
            if len(fields) != 4 or not fields[1].isdigit():
                raise DataError(
                    f"{path}, line {n + 1}: expected '<image> <class id> <species> <breed id>', got {line!r}"
                )
            items.append(
                Datum(
                    impath=os.path.join(self.image_dir, fields[0] + ".jpg"),
                    label=int(fields[1]) - 1,
                    classname=pets_breed(fields[0]),
                )
            )
        return items
