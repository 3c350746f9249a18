"""Facts about each dataset's on-disk layout (CoOp's DATASETS.md), shared by the dataset classes and the
data-preparation command.

Paths are relative to the dataset's folder under ``DATASET.ROOT``.
"""

from __future__ import annotations

from dataclasses import dataclass

from anchoropt.errors import ConfigError

FEWSHOT_DIR = "split_fewshot"  # CoOp's folder name for the few-shot caches, inside the dataset folder

# CoOp's copy of CLIP's ImageNet class names; the four variants use the same file.
IMAGENET_CLASSNAMES_GDRIVE_ID = "1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF"
FLOWERS_CAT_TO_NAME_GDRIVE_ID = "1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0"


@dataclass(frozen=True)
class Entry:
    """A file or folder a dataset needs."""

    path: str
    kind: str  # "dir" or "file"
    what: str
    gdrive_id: str = ""  # set for the small files prepare-data can fetch from CoOp's Google Drive
    verify: str = ""  # how a download is verified: "split", "classnames" or "cat_to_name"
    alternatives: tuple[str, ...] = ()  # other accepted paths for the same thing


@dataclass(frozen=True)
class DatasetFacts:
    name: str  # DATASET_REGISTRY name (CoOp's class name)
    config: str  # configs/datasets/<config>.yaml
    folder: str  # folder under DATASET.ROOT
    image_dir: str  # folder holding the images; split-file paths are relative to it ("" = the dataset folder)
    num_classes: int  # classes of the full, real dataset
    source: str  # where the images come from
    required: tuple[Entry, ...] = ()  # always needed (images; files the loader always reads)
    split: Entry | None = None  # CoOp's split_zhou_*.json, if the dataset has one
    split_sources: tuple[Entry, ...] = ()  # what a new random split is built from when the split file is missing
    test_only: bool = False  # ImageNet variants: evaluation only, all classes, no few-shot sampling

    @property
    def downloadable(self) -> tuple[Entry, ...]:
        """The small files prepare-data can fetch (split file, class-name files)."""
        entries = ((self.split,) if self.split else ()) + self.required + self.split_sources
        return tuple(e for e in entries if e.gdrive_id)


def _split(name: str, gdrive_id: str) -> Entry:
    return Entry(f"split_zhou_{name}.json", "file", "CoOp's train/val/test split", gdrive_id, "split")


def _classnames() -> Entry:
    return Entry(
        "classnames.txt",
        "file",
        "ImageNet class names (<wnid> <name> per line)",
        IMAGENET_CLASSNAMES_GDRIVE_ID,
        "classnames",
    )


_CATALOG = (
    DatasetFacts(
        "ImageNet",
        "imagenet",
        "imagenet",
        "images",
        1000,
        "https://image-net.org (ILSVRC-2012 train and val)",
        required=(
            Entry("images/train", "dir", "training images, one folder per wnid"),
            Entry("images/val", "dir", "validation images (the test set), one folder per wnid"),
            _classnames(),
        ),
    ),
    DatasetFacts(
        "Caltech101",
        "caltech101",
        "caltech-101",
        "101_ObjectCategories",
        100,
        "https://data.caltech.edu/records/mzrjq-6wc02 (caltech-101.zip)",
        required=(Entry("101_ObjectCategories", "dir", "images, one folder per category"),),
        split=_split("Caltech101", "1hyarUivQE36mY6jSomru6Fjd-JzwcCzN"),
    ),
    DatasetFacts(
        "OxfordPets",
        "oxford_pets",
        "oxford_pets",
        "images",
        37,
        "https://www.robots.ox.ac.uk/~vgg/data/pets/ (images.tar.gz, annotations.tar.gz)",
        required=(Entry("images", "dir", "images"),),
        split=_split("OxfordPets", "1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs"),
        split_sources=(
            Entry("annotations/trainval.txt", "file", "trainval list"),
            Entry("annotations/test.txt", "file", "test list"),
        ),
    ),
    DatasetFacts(
        "StanfordCars",
        "stanford_cars",
        "stanford_cars",
        "",
        196,
        "https://ai.stanford.edu/~jkrause/cars/car_dataset.html (cars_train, cars_test, devkit, test labels)",
        required=(Entry("cars_train", "dir", "training images"), Entry("cars_test", "dir", "test images")),
        split=_split("StanfordCars", "1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT"),
        split_sources=(
            Entry("devkit/cars_train_annos.mat", "file", "training labels"),
            Entry("devkit/cars_meta.mat", "file", "class names"),
            Entry("cars_test_annos_withlabels.mat", "file", "test labels"),
        ),
    ),
    DatasetFacts(
        "OxfordFlowers",
        "oxford_flowers",
        "oxford_flowers",
        "jpg",
        102,
        "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ (102flowers.tgz, imagelabels.mat)",
        required=(Entry("jpg", "dir", "images"),),
        split=_split("OxfordFlowers", "1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT"),
        split_sources=(
            Entry("imagelabels.mat", "file", "image labels"),
            Entry("cat_to_name.json", "file", "class names", FLOWERS_CAT_TO_NAME_GDRIVE_ID, "cat_to_name"),
        ),
    ),
    DatasetFacts(
        "Food101",
        "food101",
        "food-101",
        "images",
        101,
        "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/ (food-101.tar.gz)",
        required=(Entry("images", "dir", "images, one folder per class"),),
        split=_split("Food101", "1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl"),
    ),
    DatasetFacts(
        "FGVCAircraft",
        "fgvc_aircraft",
        "fgvc_aircraft",
        "images",
        100,
        "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/ (fgvc-aircraft-2013b.tar.gz, keep data/ renamed "
        "to fgvc_aircraft/)",
        required=(
            Entry("images", "dir", "images"),
            Entry("variants.txt", "file", "class names (one variant per line)"),
            Entry("images_variant_train.txt", "file", "training list"),
            Entry("images_variant_val.txt", "file", "validation list"),
            Entry("images_variant_test.txt", "file", "test list"),
        ),
    ),
    DatasetFacts(
        "SUN397",
        "sun397",
        "sun397",
        "SUN397",
        397,
        "https://vision.princeton.edu/projects/2010/SUN/ (SUN397.tar.gz, Partitions.zip)",
        required=(Entry("SUN397", "dir", "images, one folder tree per class"),),
        split=_split("SUN397", "1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq"),
        split_sources=(
            Entry("ClassName.txt", "file", "class list"),
            Entry("Training_01.txt", "file", "training partition 1"),
            Entry("Testing_01.txt", "file", "test partition 1"),
        ),
    ),
    DatasetFacts(
        "DescribableTextures",
        "dtd",
        "dtd",
        "images",
        47,
        "https://www.robots.ox.ac.uk/~vgg/data/dtd/ (dtd-r1.0.1.tar.gz)",
        required=(Entry("images", "dir", "images, one folder per texture"),),
        split=_split("DescribableTextures", "1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x"),
    ),
    DatasetFacts(
        "EuroSAT",
        "eurosat",
        "eurosat",
        "2750",
        10,
        "http://madm.dfki.de/files/sentinel/EuroSAT.zip",
        required=(Entry("2750", "dir", "images, one folder per land-use class"),),
        split=_split("EuroSAT", "1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o"),
    ),
    DatasetFacts(
        "UCF101",
        "ucf101",
        "ucf101",
        "UCF-101-midframes",
        101,
        "UCF-101-midframes.zip from CoOp's Google Drive (file id 10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O)",
        required=(Entry("UCF-101-midframes", "dir", "middle frames, one folder per action"),),
        split=_split("UCF101", "1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y"),
        split_sources=(
            Entry("ucfTrainTestlist/classInd.txt", "file", "class index"),
            Entry("ucfTrainTestlist/trainlist01.txt", "file", "training list 1"),
            Entry("ucfTrainTestlist/testlist01.txt", "file", "test list 1"),
        ),
    ),
    DatasetFacts(
        "ImageNetV2",
        "imagenetv2",
        "imagenetv2",
        "imagenetv2-matched-frequency-format-val",
        1000,
        "https://github.com/modestyachts/ImageNetV2 (imagenetv2-matched-frequency.tar.gz)",
        required=(
            Entry("imagenetv2-matched-frequency-format-val", "dir", "images, folders 0..999 by class index"),
            _classnames(),
        ),
        test_only=True,
    ),
    DatasetFacts(
        "ImageNetSketch",
        "imagenet_sketch",
        "imagenet-sketch",
        "images",
        1000,
        "https://github.com/HaohanWang/ImageNet-Sketch",
        required=(
            Entry("images", "dir", "images, one folder per wnid", alternatives=("sketch",)),  # archive: sketch/
            _classnames(),
        ),
        test_only=True,
    ),
    DatasetFacts(
        "ImageNetA",
        "imagenet_a",
        "imagenet-adversarial",
        "imagenet-a",
        200,
        "https://github.com/hendrycks/natural-adv-examples",
        required=(Entry("imagenet-a", "dir", "images, 200 folders named by wnid"), _classnames()),
        test_only=True,
    ),
    DatasetFacts(
        "ImageNetR",
        "imagenet_r",
        "imagenet-rendition",
        "imagenet-r",
        200,
        "https://github.com/hendrycks/imagenet-r",
        required=(Entry("imagenet-r", "dir", "images, 200 folders named by wnid"), _classnames()),
        test_only=True,
    ),
)

CATALOG: dict[str, DatasetFacts] = {facts.name: facts for facts in _CATALOG}
DATASET_NAMES: tuple[str, ...] = tuple(CATALOG)


def lookup(name: str) -> DatasetFacts:
    """Facts for a registry name, config name or folder name (case-insensitive)."""
    wanted = name.strip().casefold()
    for facts in _CATALOG:
        if wanted in (facts.name.casefold(), facts.config.casefold(), facts.folder.casefold()):
            return facts
    raise ConfigError(f"Unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}")
