"""The 11 few-shot benchmarks and 4 ImageNet variants, registered in ``DATASET_REGISTRY`` under CoOp's names.

Importing this package registers them (Dassl's pattern). Layout facts live in
``catalog``; the shared steps in ``splits`` (split files, random splits),
``fewshot`` (per-seed sampling and its JSON cache), ``subsample`` (base / new
classes) and ``files`` (folder and bulk image checks).
"""

from anchoropt.datasets.caltech101 import Caltech101
from anchoropt.datasets.catalog import CATALOG, DATASET_NAMES, DatasetFacts, lookup
from anchoropt.datasets.dtd import DescribableTextures
from anchoropt.datasets.eurosat import EuroSAT
from anchoropt.datasets.fgvc_aircraft import FGVCAircraft
from anchoropt.datasets.food101 import Food101
from anchoropt.datasets.imagenet import ImageNet
from anchoropt.datasets.imagenet_a import ImageNetA
from anchoropt.datasets.imagenet_r import ImageNetR
from anchoropt.datasets.imagenet_sketch import ImageNetSketch
from anchoropt.datasets.imagenetv2 import ImageNetV2
from anchoropt.datasets.oxford_flowers import OxfordFlowers
from anchoropt.datasets.oxford_pets import OxfordPets
from anchoropt.datasets.stanford_cars import StanfordCars
from anchoropt.datasets.subsample import SUBSAMPLE_CHOICES, base_new_labels, subsample_classes
from anchoropt.datasets.sun397 import SUN397
from anchoropt.datasets.toyworld import WORLD_CLASSES  # the toy world's datasets (anchoropt.toyworld)
from anchoropt.datasets.ucf101 import UCF101

__all__ = [
    "CATALOG",
    "DATASET_NAMES",
    "DatasetFacts",
    "lookup",
    "SUBSAMPLE_CHOICES",
    "base_new_labels",
    "subsample_classes",
    "ImageNet",
    "Caltech101",
    "OxfordPets",
    "StanfordCars",
    "OxfordFlowers",
    "Food101",
    "FGVCAircraft",
    "SUN397",
    "DescribableTextures",
    "EuroSAT",
    "UCF101",
    "ImageNetV2",
    "ImageNetSketch",
    "ImageNetA",
    "ImageNetR",
    "WORLD_CLASSES",
]
