"""ImageNetV2 matched-frequency (test only): folders ``0`` .. ``999`` by ImageNet class index."""

from __future__ import annotations

import os

from anchoropt.datasets.catalog import CATALOG
from anchoropt.datasets.imagenet_family import ImageNetVariant
from anchoropt.engine import DATASET_REGISTRY
from anchoropt.errors import DataError


@DATASET_REGISTRY.register()
class ImageNetV2(ImageNetVariant):
    facts = CATALOG["ImageNetV2"]

    def class_folders(self, classnames):
        folders = [str(label) for label in range(len(classnames))]
        absent = [f for f in folders if not os.path.isdir(os.path.join(self.image_dir, f))]
        if absent:
            raise DataError(
                f"ImageNetV2: {len(absent)} of {len(folders)} class folders are missing under "
                f"{self.image_dir}: {', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''} "
                f"(expected one folder per line of {self.classnames_path}, named 0, 1, ...)"
            )
        return folders, list(classnames.values())
