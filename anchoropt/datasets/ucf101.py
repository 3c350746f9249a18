"""UCF101 middle frames (101 actions); CamelCase action names become underscore-separated words."""

from __future__ import annotations

import os
import re

from anchoropt.datasets.benchmark import BenchmarkDataset
from anchoropt.datasets.catalog import CATALOG
from anchoropt.datasets.files import read_lines
from anchoropt.datasets.splits import split_trainval
from anchoropt.engine import DATASET_REGISTRY, Datum
from anchoropt.errors import DataError


def split_camel_case(action: str) -> str:
    """``ApplyEyeMakeup`` -> ``Apply_Eye_Makeup`` (also the frame folder's name)."""
    return "_".join(re.findall("[A-Z][^A-Z]*", action))


@DATASET_REGISTRY.register()
class UCF101(BenchmarkDataset):
    facts = CATALOG["UCF101"]

    def build_split(self):
        list_dir = os.path.join(self.dataset_dir, "ucfTrainTestlist")
        class_index = os.path.join(list_dir, "classInd.txt")
        cname2lab = {}
        for line in read_lines(class_index, "UCF101 class index"):
            fields = line.split(" ")
            if len(fields) != 2 or not fields[0].isdigit():
                raise DataError(f"{class_index}: expected '<index> <action>' lines, got {line!r}")
            cname2lab[fields[1]] = int(fields[0]) - 1
        trainval = self._read_list(cname2lab, os.path.join(list_dir, "trainlist01.txt"))
        test = self._read_list(cname2lab, os.path.join(list_dir, "testlist01.txt"))
        train, val = split_trainval(trainval, where=os.path.join(list_dir, "trainlist01.txt"))
        return train, val, test

    def _read_list(self, cname2lab: dict[str, int], path: str) -> list:
        items = []
        for line in read_lines(path, "UCF101 video list"):
            video = line.split(" ")[0]  # trainlist lines also carry the label
            action, _, filename = video.partition("/")
            if action not in cname2lab or not filename:
                raise DataError(f"{path}: {line!r} is not '<action>/<video>.avi' with an action from classInd.txt")
            renamed = split_camel_case(action)
            items.append(
                Datum(
                    impath=os.path.join(self.image_dir, renamed, filename.replace(".avi", ".jpg")),
                    label=cname2lab[action],
                    classname=renamed,
                )
            )
        return items
