"""ImageNet-R (test only): 200 wnid folders; labels follow the sorted folders present, as in CoOp."""

from __future__ import annotations

from anchoropt.datasets.catalog import CATALOG
from anchoropt.datasets.imagenet_family import ImageNetVariant
from anchoropt.engine import DATASET_REGISTRY


@DATASET_REGISTRY.register()
class ImageNetR(ImageNetVariant):
    facts = CATALOG["ImageNetR"]
