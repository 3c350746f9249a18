"""ImageNet-Sketch (test only): one folder per wnid, all 1000 classes."""

from __future__ import annotations

from anchoropt.datasets.catalog import CATALOG
from anchoropt.datasets.imagenet_family import ImageNetVariant
from anchoropt.engine import DATASET_REGISTRY


@DATASET_REGISTRY.register()
class ImageNetSketch(ImageNetVariant):
    facts = CATALOG["ImageNetSketch"]
