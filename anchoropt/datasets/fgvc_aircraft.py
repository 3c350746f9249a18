"""FGVC-Aircraft (100 variants); its own train / val / test lists, no split file."""

from __future__ import annotations

import os

from anchoropt.datasets.benchmark import BenchmarkDataset
from anchoropt.datasets.catalog import CATALOG
from anchoropt.datasets.files import read_lines
from anchoropt.engine import DATASET_REGISTRY, Datum
from anchoropt.errors import DataError


@DATASET_REGISTRY.register()
class FGVCAircraft(BenchmarkDataset):
    facts = CATALOG["FGVCAircraft"]

    @property
    def source_description(self) -> str:
        return os.path.join(self.dataset_dir, "images_variant_*.txt")

    def read_full_splits(self):
        classnames = read_lines(os.path.join(self.dataset_dir, "variants.txt"), "FGVCAircraft variant list")
        cname2lab = {c: i for i, c in enumerate(classnames)}
        return tuple(self._read_list(cname2lab, f"images_variant_{s}.txt") for s in ("train", "val", "test"))

    def _read_list(self, cname2lab: dict[str, int], name: str) -> list:
        path = os.path.join(self.dataset_dir, name)
        items = []
        for line in read_lines(path, "FGVCAircraft image list"):
            image_id, _, classname = line.partition(" ")  # variant names may contain spaces
            if classname not in cname2lab:
                raise DataError(f"{path}: variant {classname!r} of {line!r} is not in variants.txt")
            items.append(
                Datum(
                    impath=os.path.join(self.image_dir, image_id + ".jpg"),
                    label=cname2lab[classname],
                    classname=classname,
                )
            )
        return items
