"""ImageNet (ILSVRC-2012, 1000 classes); the validation set is the test set, as in CoOp.

Listing 1.28 M training files is slow on network file systems, so the listing
is cached in ``preprocessed.json`` (folder -> file names, relative, safe to
load; CoOp pickles absolute paths in ``preprocessed.pkl``). The cache is
rebuilt when the class folders change; delete it after adding or removing
images inside a class folder.
"""

from __future__ import annotations

import json
import os
import warnings

from anchoropt.datasets.benchmark import BenchmarkDataset
from anchoropt.datasets.catalog import CATALOG
from anchoropt.datasets.files import check_images_exist, list_images, list_subfolders
from anchoropt.datasets.imagenet_family import items_from_folders, names_for, read_classnames
from anchoropt.datasets.splits import load_json
from anchoropt.engine import DATASET_REGISTRY
from anchoropt.errors import DataError
from anchoropt.fileio import atomic_write_bytes

INDEX_FILE = "preprocessed.json"
INDEX_FORMAT = "anchoropt-imagenet-index/1"


def imagenet_index(image_dir: str, index_path: str) -> dict[str, dict[str, list[str]]]:
    """``{"train": {wnid: [file, ...]}, "val": {...}}``, from the cache when its class folders are current."""
    folders = {s: list_subfolders(os.path.join(image_dir, s), f"ImageNet {s} folder") for s in ("train", "val")}
    if folders["train"] != folders["val"]:
        only_train = sorted(set(folders["train"]) - set(folders["val"]))
        only_val = sorted(set(folders["val"]) - set(folders["train"]))
        raise DataError(
            f"ImageNet: {image_dir}/train and {image_dir}/val must hold the same class folders; "
            f"only in train: {only_train[:5]} ({len(only_train)}), only in val: {only_val[:5]} "
            f"({len(only_val)})"
        )
    if os.path.exists(index_path):
        try:
            index = load_json(index_path, "ImageNet index")
        except DataError as e:
            index, reason = None, str(e)
        else:
            reason = "it is not an index of the current class folders"
        if (
            isinstance(index, dict)
            and index.get("format") == INDEX_FORMAT
            and all(
                isinstance(index.get(s), dict)
                and list(index[s]) == folders[s]
                and all(isinstance(v, list) for v in index[s].values())
                for s in folders
            )
        ):
            print(f"Loading the ImageNet file listing from {index_path}")
            return {s: index[s] for s in folders}
        warnings.warn(f"Rebuilding the ImageNet file listing {index_path}: {reason}")
    print(f"Listing the ImageNet images under {image_dir} (cached in {index_path})")
    listing = {s: {f: list_images(os.path.join(image_dir, s, f)) for f in folders[s]} for s in folders}
    try:  # compact: ~40 MB for the real training set
        atomic_write_bytes(index_path, json.dumps({"format": INDEX_FORMAT, **listing}, separators=(",", ":")).encode())
    except OSError as e:
        warnings.warn(f"Could not write {index_path} ({e}); the images are listed again next run")
    return listing


@DATASET_REGISTRY.register()
class ImageNet(BenchmarkDataset):
    facts = CATALOG["ImageNet"]

    @property
    def source_description(self) -> str:
        return f"the file listing {os.path.join(self.dataset_dir, INDEX_FILE)} (delete it to list the images again)"

    def read_full_splits(self):
        classnames_path = os.path.join(self.dataset_dir, "classnames.txt")
        classnames = read_classnames(classnames_path)
        index = imagenet_index(self.image_dir, os.path.join(self.dataset_dir, INDEX_FILE))
        folders = list(index["train"])
        names = names_for(folders, classnames, classnames_path, os.path.join(self.image_dir, "train"))
        train = items_from_folders(os.path.join(self.image_dir, "train"), folders, names, list(index["train"].values()))
        test = items_from_folders(os.path.join(self.image_dir, "val"), folders, names, list(index["val"].values()))
        return train, None, test

    def check_images(self, train, val, test, num_shots):
        # The full training set (1.28 M files) is not checked here: an image that has gone missing since the
        # listing is reported when it is read. The few-shot sample and the test set are checked in bulk.
        items = (list(train) if num_shots >= 1 else []) + list(test)
        check_images_exist(self.facts, items, self.image_dir, self.source_description, self.root)
