"""EuroSAT (10 land-use classes), with CoOp's readable class names."""

from __future__ import annotations

from anchoropt.datasets.benchmark import BenchmarkDataset
from anchoropt.datasets.catalog import CATALOG
from anchoropt.datasets.splits import split_category_folders
from anchoropt.engine import DATASET_REGISTRY

READABLE_CLASSNAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


@DATASET_REGISTRY.register()
class EuroSAT(BenchmarkDataset):
    facts = CATALOG["EuroSAT"]

    def build_split(self):
        return split_category_folders(self.image_dir, new_cnames=READABLE_CLASSNAMES)
