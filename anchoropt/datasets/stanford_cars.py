"""Stanford Cars (196 models); CoOp moves the year to the front of each class name."""

from __future__ import annotations

import os

from anchoropt.datasets.benchmark import BenchmarkDataset
from anchoropt.datasets.catalog import CATALOG
from anchoropt.datasets.files import read_mat
from anchoropt.datasets.splits import split_trainval
from anchoropt.engine import DATASET_REGISTRY, Datum
from anchoropt.errors import DataError


def year_first(classname: str) -> str:
    """``AM General Hummer SUV 2000`` -> ``2000 AM General Hummer SUV``."""
    words = classname.split(" ")
    return " ".join([words[-1], *words[:-1]])


@DATASET_REGISTRY.register()
class StanfordCars(BenchmarkDataset):
    facts = CATALOG["StanfordCars"]

    def build_split(self):
        meta = os.path.join(self.dataset_dir, "devkit", "cars_meta.mat")
        train_annos = os.path.join(self.dataset_dir, "devkit", "cars_train_annos.mat")
        trainval = self._read_annotations("cars_train", train_annos, meta)
        test = self._read_annotations(
            "cars_test", os.path.join(self.dataset_dir, "cars_test_annos_withlabels.mat"), meta
        )
        train, val = split_trainval(trainval, where=train_annos)
        return train, val, test

    def _read_annotations(self, image_folder: str, anno_file: str, meta_file: str) -> list:
        annotations = read_mat(anno_file, "annotations", "Stanford Cars annotations").reshape(-1)
        class_names = read_mat(meta_file, "class_names", "Stanford Cars class names").reshape(-1)
        items = []
        for i, anno in enumerate(annotations):
            try:
                imname = str(anno["fname"].reshape(-1)[0])
                label = int(anno["class"].reshape(-1)[0]) - 1
                classname = year_first(str(class_names[label].reshape(-1)[0]))
            except (ValueError, IndexError) as e:
                raise DataError(f"{anno_file}: annotation {i} has no usable 'fname'/'class' ({e})") from None
            items.append(
                Datum(impath=os.path.join(self.dataset_dir, image_folder, imname), label=label, classname=classname)
            )
        return items
