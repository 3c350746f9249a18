"""Small generated copies of the 15 datasets in their real on-disk layouts (CoOp's DATASETS.md).

    from tests.support.data_layouts import write_dataset, write_all
    info = write_dataset("OxfordPets", tmp_path, n_classes=5, n_per_class=10)
    # -> tmp_path/oxford_pets/{images/, annotations/, split_zhou_OxfordPets.json}
    info.classnames, info.num_classes, info.split_size("train"), info.config_file

Real folder and file names and formats (split_zhou_*.json rows, .txt lists,
.mat files, wnid folders); tiny 8x8 images, one colour per class with a
per-image shade, so a model can learn something from them. Class names are
real ones (extended with synthetic names beyond the built-in lists).

Per class, split datasets hold ``n_train``/``n_val``/``n_test`` images with
``n_test = round(0.3 n)``, ``n_val = round(0.2 n)`` (at least 1 each). With
``with_split=False`` no split file is written; the raw annotation files are
always there, so with ``DATASET.RANDOM_SPLIT_IF_MISSING True`` the dataset class builds a
random split as CoOp does (without it, a missing split file is an error).

Fixtures (import them into a test module explicitly):
``generated_data_root`` (all 15 datasets, default sizes) and
``dataset_writer`` (a function ``(name, **kw) -> GeneratedDataset`` writing
into one temporary root).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]

DATASET_NAMES = (
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
)
CONFIG_NAMES = {
    "ImageNet": "imagenet",
    "Caltech101": "caltech101",
    "OxfordPets": "oxford_pets",
    "StanfordCars": "stanford_cars",
    "OxfordFlowers": "oxford_flowers",
    "Food101": "food101",
    "FGVCAircraft": "fgvc_aircraft",
    "SUN397": "sun397",
    "DescribableTextures": "dtd",
    "EuroSAT": "eurosat",
    "UCF101": "ucf101",
    "ImageNetV2": "imagenetv2",
    "ImageNetSketch": "imagenet_sketch",
    "ImageNetA": "imagenet_a",
    "ImageNetR": "imagenet_r",
}
FOLDERS = {
    "ImageNet": "imagenet",
    "Caltech101": "caltech-101",
    "OxfordPets": "oxford_pets",
    "StanfordCars": "stanford_cars",
    "OxfordFlowers": "oxford_flowers",
    "Food101": "food-101",
    "FGVCAircraft": "fgvc_aircraft",
    "SUN397": "sun397",
    "DescribableTextures": "dtd",
    "EuroSAT": "eurosat",
    "UCF101": "ucf101",
    "ImageNetV2": "imagenetv2",
    "ImageNetSketch": "imagenet-sketch",
    "ImageNetA": "imagenet-adversarial",
    "ImageNetR": "imagenet-rendition",
}
# Odd and even counts on purpose: base = first ceil(n/2) classes.
DEFAULT_CLASSES = {
    "ImageNet": 4,
    "Caltech101": 5,
    "OxfordPets": 5,
    "StanfordCars": 4,
    "OxfordFlowers": 5,
    "Food101": 4,
    "FGVCAircraft": 5,
    "SUN397": 4,
    "DescribableTextures": 3,
    "EuroSAT": 5,
    "UCF101": 4,
    "ImageNetV2": 6,
    "ImageNetSketch": 6,
    "ImageNetA": 6,
    "ImageNetR": 6,
}
DEFAULT_PER_CLASS = 10
TEST_ONLY = ("ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR")
# CoOp builds a missing split either by holding out 20% of a trainval list, or 50/20/30 from all images.
TRAINVAL_SPLIT = ("OxfordPets", "StanfordCars", "SUN397", "UCF101")
FOLDER_SPLIT = ("Caltech101", "OxfordFlowers", "Food101", "DescribableTextures", "EuroSAT")

IMAGENET_CLASSES = [
    ("n01440764", "tench"),
    ("n01443537", "goldfish"),
    ("n01484850", "great white shark"),
    ("n01491361", "tiger shark"),
    ("n01494475", "hammerhead shark"),
    ("n01496331", "electric ray"),
    ("n01498041", "stingray"),
    ("n01514668", "rooster"),
    ("n01514859", "hen"),
    ("n01518878", "ostrich"),
]
CALTECH_FOLDERS = ["accordion", "airplanes", "Faces", "Leopards", "anchor", "Motorbikes", "ant", "barrel"]
CALTECH_RENAMED = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}
PETS_BREEDS = [
    "Abyssinian",
    "american_bulldog",
    "american_pit_bull_terrier",
    "basset_hound",
    "beagle",
    "Bengal",
    "Birman",
    "Bombay",
]
CARS_CLASSES = [
    "AM General Hummer SUV 2000",
    "Acura RL Sedan 2012",
    "Acura TL Sedan 2012",
    "Acura TL Type-S 2008",
    "Acura TSX Sedan 2012",
    "Acura Integra Type R 2001",
]
FLOWERS_CLASSES = [
    "pink primrose",
    "hard-leaved pocket orchid",
    "canterbury bells",
    "sweet pea",
    "english marigold",
    "tiger lily",
]
FOOD_CLASSES = ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beef_tartare", "beet_salad"]
AIRCRAFT_VARIANTS = ["707-320", "727-200", "Cessna 172", "A300B4", "DHC-1", "Falcon 2000", "737-200"]
SUN_CLASSES = [
    "/a/abbey",
    "/a/airplane_cabin",
    "/a/apartment_building/outdoor",
    "/b/bakery/shop",
    "/b/ballroom",
    "/c/campus",
]
DTD_CLASSES = ["banded", "blotchy", "braided", "bubbly", "bumpy", "chequered"]
EUROSAT_CLASSES = [
    ("AnnualCrop", "Annual Crop Land"),
    ("Forest", "Forest"),
    ("HerbaceousVegetation", "Herbaceous Vegetation Land"),
    ("Highway", "Highway or Road"),
    ("Industrial", "Industrial Buildings"),
    ("Pasture", "Pasture Land"),
    ("PermanentCrop", "Permanent Crop Land"),
    ("Residential", "Residential Buildings"),
    ("River", "River"),
    ("SeaLake", "Sea or Lake"),
]
UCF_ACTIONS = ["ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "BalanceBeam", "YoYo"]


@dataclass
class GeneratedDataset:
    """What was written, and what the dataset class is expected to report for it."""

    name: str  # DATASET_REGISTRY name
    root: Path  # the data root (DATASET.ROOT)
    dataset_dir: Path
    classnames: list[str]  # in label order, as the dataset class reports them
    per_class: dict[str, int]  # images per class in train / val / test (of the split file, if one is written)
    with_split: bool = True
    images: list[Path] = field(default_factory=list)  # every image written for a used class

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def split_size(self, split: str) -> int:
        return self.per_class[split] * self.num_classes

    @property
    def config_file(self) -> str:
        """configs/datasets/<name>.yaml of the repository."""
        return str(REPO / "configs" / "datasets" / f"{CONFIG_NAMES[self.name]}.yaml")

    def generated_split_per_class(self) -> dict[str, int]:
        """Per-class sizes of the random split CoOp's rules build when no split file exists."""
        if self.name in TRAINVAL_SPLIT:
            trainval = self.per_class["train"] + self.per_class["val"]
            n_val = round(trainval * 0.2)
            return {"train": trainval - n_val, "val": n_val, "test": self.per_class["test"]}
        if self.name in FOLDER_SPLIT:
            total = sum(self.per_class.values())
            n_train, n_val = round(total * 0.5), round(total * 0.2)
            return {"train": n_train, "val": n_val, "test": total - n_train - n_val}
        return dict(self.per_class)


# --------------------------------------------------------------------------- images

_BYTES_CACHE: dict[tuple[tuple[int, int, int], str, int], bytes] = {}


def _color(label: int, index: int) -> tuple[int, int, int]:
    base = [
        (230, 40, 40),
        (40, 200, 40),
        (40, 60, 230),
        (230, 210, 40),
        (200, 40, 210),
        (40, 210, 210),
        (240, 140, 30),
        (120, 120, 120),
    ][label % 8]
    shade = (index % 5) * 6 - 12
    return tuple(max(0, min(255, c + shade + 17 * (label // 8))) for c in base)  # type: ignore[return-value]


def image_bytes(color: tuple[int, int, int], suffix: str, size: int = 8) -> bytes:
    fmt = "PNG" if suffix.lower() == ".png" else "JPEG"
    key = (color, fmt, size)
    if key not in _BYTES_CACHE:
        buf = io.BytesIO()
        Image.new("RGB", (size, size), color).save(buf, format=fmt)
        _BYTES_CACHE[key] = buf.getvalue()
    return _BYTES_CACHE[key]


def write_image(path: Path, label: int, index: int, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(_color(label, index), path.suffix, size))
    return path


def _write_text(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=4))


# --------------------------------------------------------------------------- shared pieces


def _counts(n: int) -> dict[str, int]:
    if n < 3:
        raise ValueError(f"n_per_class must be at least 3 (one image per split), got {n}")
    n_test, n_val = max(1, round(0.3 * n)), max(1, round(0.2 * n))
    return {"train": n - n_test - n_val, "val": n_val, "test": n_test}


def _names(pool: list, n: int, synth: Callable[[int], object]) -> list:
    return [pool[i] if i < len(pool) else synth(i) for i in range(n)]


def imagenet_classes(n: int) -> list[tuple[str, str]]:
    """(wnid, class name) pairs; real ones first, then synthetic ``n9xxxxxxx`` wnids."""
    return _names(IMAGENET_CLASSES, n, lambda i: (f"n9{i:07d}", f"synthetic class {i}"))


class _SplitWriter:
    """Collects split rows per class and writes split_zhou_*.json."""

    def __init__(self) -> None:
        self.rows: dict[str, list] = {"train": [], "val": [], "test": []}

    def add(self, split: str, rel: str, label: int, classname: str) -> None:
        self.rows[split].append([rel, label, classname])

    def write(self, path: Path) -> None:
        _write_json(path, self.rows)


def _per_class_files(counts: dict[str, int]) -> list[tuple[str, int]]:
    """(split, index within class) for every image of one class."""
    out, i = [], 0
    for split in ("train", "val", "test"):
        for _ in range(counts[split]):
            out.append((split, i))
            i += 1
    return out


# --------------------------------------------------------------------------- per dataset


def _folder_dataset(
    d: Path,
    image_sub: str,
    folders: list[str],
    classnames: list[str],
    counts,
    name_fmt,
    split_name: str,
    with_split: bool,
    info: GeneratedDataset,
) -> None:
    """Caltech101 / DTD / EuroSAT / Food101: image_sub/<category>/<image>."""
    split = _SplitWriter()
    for label, (folder, cname) in enumerate(zip(folders, classnames)):
        for s, i in _per_class_files(counts):
            rel = f"{folder}/{name_fmt(folder, i)}"
            info.images.append(write_image(d / image_sub / rel, label, i))
            split.add(s, rel, label, cname)
    if with_split:
        split.write(d / f"split_zhou_{split_name}.json")


def _write_caltech(d, n, counts, with_split, info):
    # Real labels follow the case-sensitive sort of the folder names (upper case first).
    folders = sorted(_names(CALTECH_FOLDERS, n, lambda i: f"category_{i:03d}"))
    info.classnames = [CALTECH_RENAMED.get(f, f) for f in folders]
    _folder_dataset(
        d,
        "101_ObjectCategories",
        folders,
        info.classnames,
        counts,
        lambda f, i: f"image_{i + 1:04d}.jpg",
        "Caltech101",
        with_split,
        info,
    )
    for ignored in ("BACKGROUND_Google", "Faces_easy"):  # present on disk, never a class
        for i in range(3):
            write_image(d / "101_ObjectCategories" / ignored / f"image_{i + 1:04d}.jpg", 7, i)


def _write_dtd(d, n, counts, with_split, info):
    folders = _names(DTD_CLASSES, n, lambda i: f"texture{i:02d}")
    info.classnames = list(folders)
    _folder_dataset(
        d,
        "images",
        folders,
        folders,
        counts,
        lambda f, i: f"{f}_{i + 1:04d}.jpg",
        "DescribableTextures",
        with_split,
        info,
    )


def _write_eurosat(d, n, counts, with_split, info):
    if n > len(EUROSAT_CLASSES):
        raise ValueError(f"EuroSAT has {len(EUROSAT_CLASSES)} classes; asked for {n}")
    folders = [f for f, _ in EUROSAT_CLASSES[:n]]
    info.classnames = [c for _, c in EUROSAT_CLASSES[:n]]
    _folder_dataset(
        d, "2750", folders, info.classnames, counts, lambda f, i: f"{f}_{i + 1}.jpg", "EuroSAT", with_split, info
    )


def _write_food(d, n, counts, with_split, info):
    folders = _names(FOOD_CLASSES, n, lambda i: f"dish_{i:03d}")
    info.classnames = list(folders)
    _folder_dataset(
        d, "images", folders, folders, counts, lambda f, i: f"{1000000 + 37 * i}.jpg", "Food101", with_split, info
    )
    _write_text(d / "meta" / "classes.txt", folders)


def _write_pets(d, n, counts, with_split, info):
    breeds = _names(PETS_BREEDS, n, lambda i: f"breed{i:02d}")
    info.classnames = [b.lower() for b in breeds]
    split, trainval, test = _SplitWriter(), [], []
    for label, breed in enumerate(breeds):
        for s, i in _per_class_files(counts):
            stem = f"{breed}_{i + 1}"
            info.images.append(write_image(d / "images" / f"{stem}.jpg", label, i))
            split.add(s, f"{stem}.jpg", label, breed.lower())
            species = 1 if breed[0].isupper() else 2  # cats have capitalised names
            (test if s == "test" else trainval).append(f"{stem} {label + 1} {species} {label + 1}")
    _write_text(d / "annotations" / "trainval.txt", trainval)
    _write_text(d / "annotations" / "test.txt", test)
    if with_split:
        split.write(d / "split_zhou_OxfordPets.json")


def _write_cars(d, n, counts, with_split, info):
    from scipy.io import savemat

    names = _names(CARS_CLASSES, n, lambda i: f"Make{i} Model Sedan {2000 + i}")
    info.classnames = [" ".join([c.split(" ")[-1], *c.split(" ")[:-1]]) for c in names]
    split = _SplitWriter()
    annos: dict[str, list[tuple[str, int]]] = {"cars_train": [], "cars_test": []}
    for label in range(n):
        for s, i in _per_class_files(counts):
            folder = "cars_test" if s == "test" else "cars_train"
            fname = f"{len(annos[folder]) + 1:05d}.jpg"
            annos[folder].append((fname, label + 1))
            info.images.append(write_image(d / folder / fname, label, i))
            split.add(s, f"{folder}/{fname}", label, info.classnames[label])

    def _struct(rows):
        dt = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
        arr = np.zeros((1, len(rows)), dtype=dt)
        for j, (fname, cls) in enumerate(rows):
            box = [np.array([[v]], dtype=np.uint8) for v in (0, 0, 7, 7)]
            arr[0, j] = (*box, np.array([[cls]], dtype=np.uint8), np.array([fname]))
        return arr

    (d / "devkit").mkdir(parents=True, exist_ok=True)
    class_names = np.empty((1, n), dtype=object)
    for j, c in enumerate(names):
        class_names[0, j] = np.array([c])
    savemat(str(d / "devkit" / "cars_meta.mat"), {"class_names": class_names})
    savemat(str(d / "devkit" / "cars_train_annos.mat"), {"annotations": _struct(annos["cars_train"])})
    savemat(str(d / "cars_test_annos_withlabels.mat"), {"annotations": _struct(annos["cars_test"])})
    if with_split:
        split.write(d / "split_zhou_StanfordCars.json")


def _write_flowers(d, n, counts, with_split, info):
    from scipy.io import savemat

    info.classnames = _names(FLOWERS_CLASSES, n, lambda i: f"flower {i}")
    # The real label file interleaves classes; image_00001.jpg ... follow it.
    per_class = [_per_class_files(counts) for _ in range(n)]
    order = [(label, k) for k in range(len(per_class[0])) for label in reversed(range(n))]
    labels, split = [], _SplitWriter()
    for idx, (label, k) in enumerate(order):
        s, i = per_class[label][k]
        fname = f"image_{idx + 1:05d}.jpg"
        info.images.append(write_image(d / "jpg" / fname, label, i))
        labels.append(label + 1)
        split.add(s, fname, label, info.classnames[label])
    savemat(str(d / "imagelabels.mat"), {"labels": np.array([labels], dtype=np.uint8)})
    _write_json(d / "cat_to_name.json", {str(i + 1): c for i, c in enumerate(info.classnames)})
    if with_split:
        split.write(d / "split_zhou_OxfordFlowers.json")


def _write_aircraft(d, n, counts, with_split, info):
    variants = _names(AIRCRAFT_VARIANTS, n, lambda i: f"Variant {i}")
    info.classnames = list(variants)
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    image_id = 1000000
    for label, variant in enumerate(variants):
        for s, i in _per_class_files(counts):
            image_id += 13
            info.images.append(write_image(d / "images" / f"{image_id:07d}.jpg", label, i))
            lists[s].append(f"{image_id:07d} {variant}")
    _write_text(d / "variants.txt", variants)
    for s, lines in lists.items():
        _write_text(d / f"images_variant_{s}.txt", lines)


def _write_sun(d, n, counts, with_split, info):
    classes = _names(SUN_CLASSES, n, lambda i: f"/s/scene_{i:03d}")
    info.classnames = [" ".join(c[1:].split("/")[1:][::-1]) for c in classes]
    split, training, testing = _SplitWriter(), [], []
    for label, c in enumerate(classes):
        for s, i in _per_class_files(counts):
            rel = f"{c[1:]}/sun_{label:03d}{i:04d}.jpg"
            info.images.append(write_image(d / "SUN397" / rel, label, i))
            split.add(s, rel, label, info.classnames[label])
            (testing if s == "test" else training).append("/" + rel)
    _write_text(d / "ClassName.txt", classes)
    _write_text(d / "Training_01.txt", training)
    _write_text(d / "Testing_01.txt", testing)
    if with_split:
        split.write(d / "split_zhou_SUN397.json")


def _write_ucf(d, n, counts, with_split, info):
    actions = _names(UCF_ACTIONS, n, lambda i: f"SyntheticAction{chr(65 + i % 26)}")
    renamed = ["_".join(re.findall("[A-Z][^A-Z]*", a)) for a in actions]
    info.classnames = renamed
    split, trainlist, testlist = _SplitWriter(), [], []
    for label, (action, folder) in enumerate(zip(actions, renamed)):
        for s, i in _per_class_files(counts):
            video = f"v_{action}_g{i + 1:02d}_c01"
            info.images.append(write_image(d / "UCF-101-midframes" / folder / f"{video}.jpg", label, i))
            split.add(s, f"{folder}/{video}.jpg", label, folder)
            if s == "test":
                testlist.append(f"{action}/{video}.avi")
            else:
                trainlist.append(f"{action}/{video}.avi {label + 1}")
    _write_text(d / "ucfTrainTestlist" / "classInd.txt", [f"{i + 1} {a}" for i, a in enumerate(actions)])
    _write_text(d / "ucfTrainTestlist" / "trainlist01.txt", trainlist)
    _write_text(d / "ucfTrainTestlist" / "testlist01.txt", testlist)
    if with_split:
        split.write(d / "split_zhou_UCF101.json")


def _write_imagenet(d, n, counts, with_split, info):
    classes = imagenet_classes(n)
    info.classnames = [c for _, c in classes]
    n_train = counts["train"] + counts["val"]
    info.per_class = {"train": n_train, "val": counts["test"], "test": counts["test"]}
    _write_text(d / "classnames.txt", [f"{w} {c}" for w, c in classes])
    for label, (wnid, _) in enumerate(classes):
        for i in range(n_train):
            info.images.append(write_image(d / "images" / "train" / wnid / f"{wnid}_{i + 1}.JPEG", label, i))
        for i in range(counts["test"]):
            info.images.append(
                write_image(d / "images" / "val" / wnid / f"ILSVRC2012_val_{label * 100 + i + 1:08d}.JPEG", label, i)
            )


def variant_class_indices(name: str, n: int) -> list[int]:
    """Which of the ``n`` classes of classnames.txt a variant's generated copy holds."""
    if name in ("ImageNetA", "ImageNetR"):  # a subset, as the real 200 of 1000; not a prefix
        start = 1 if name == "ImageNetA" else 0
        return list(range(start, n, 2))
    return list(range(n))


def _write_variant(name):
    def _write(d, n, counts, with_split, info):
        classes = imagenet_classes(n)
        _write_text(d / "classnames.txt", [f"{w} {c}" for w, c in classes])
        used = variant_class_indices(name, n)
        info.classnames = [classes[k][1] for k in used]
        per = sum(counts.values())
        info.per_class = {"train": per, "val": 0, "test": per}
        sub = {
            "ImageNetV2": "imagenetv2-matched-frequency-format-val",
            "ImageNetSketch": "images",
            "ImageNetA": "imagenet-a",
            "ImageNetR": "imagenet-r",
        }[name]
        for label, k in enumerate(used):
            wnid = classes[k][0]
            folder = str(k) if name == "ImageNetV2" else wnid
            for i in range(per):
                fname = {
                    "ImageNetV2": f"{k:03d}{i:02d}a7f3.jpeg",
                    "ImageNetSketch": f"sketch_{i}.JPEG",
                    "ImageNetA": f"0.{k:03d}{i:03d}_digital_clock_0.86.jpg",
                    "ImageNetR": f"art_{i}.jpg",
                }[name]
                info.images.append(write_image(d / sub / folder / fname, label, i))
        if name in ("ImageNetA", "ImageNetR"):
            _write_text(d / sub / "README.txt", [f"{name} (generated copy)"])

    return _write


_WRITERS = {
    "ImageNet": _write_imagenet,
    "Caltech101": _write_caltech,
    "OxfordPets": _write_pets,
    "StanfordCars": _write_cars,
    "OxfordFlowers": _write_flowers,
    "Food101": _write_food,
    "FGVCAircraft": _write_aircraft,
    "SUN397": _write_sun,
    "DescribableTextures": _write_dtd,
    "EuroSAT": _write_eurosat,
    "UCF101": _write_ucf,
    **{name: _write_variant(name) for name in TEST_ONLY},
}


def write_dataset(
    name: str,
    root: str | os.PathLike,
    n_classes: int | None = None,
    n_per_class: int | None = None,
    with_split: bool = True,
) -> GeneratedDataset:
    """Write a generated copy of dataset ``name`` (registry name) under ``root``; return what to expect.

    ``n_classes``: classes (for the ImageNet variants: lines of classnames.txt;
    ImageNet-A/-R hold every other one). ``n_per_class``: images per class
    over all splits (at least 3). ``with_split``: write CoOp's split file.
    """
    if name not in _WRITERS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}")
    n = DEFAULT_CLASSES[name] if n_classes is None else n_classes
    counts = _counts(DEFAULT_PER_CLASS if n_per_class is None else n_per_class)
    d = Path(root) / FOLDERS[name]
    d.mkdir(parents=True, exist_ok=True)
    info = GeneratedDataset(
        name=name, root=Path(root), dataset_dir=d, classnames=[], per_class=dict(counts), with_split=with_split
    )
    _WRITERS[name](d, n, counts, with_split, info)
    return info


def write_all(root: str | os.PathLike, names: tuple[str, ...] = DATASET_NAMES, **kwargs) -> dict[str, GeneratedDataset]:
    """Generated copies of several datasets under one root."""
    return {name: write_dataset(name, root, **kwargs) for name in names}


def base_new_classnames(info: GeneratedDataset) -> tuple[list[str], list[str]]:
    """The expected base and new class names: first ceil(n/2) in label order, then the rest."""
    m = math.ceil(info.num_classes / 2)
    return info.classnames[:m], info.classnames[m:]


def dataset_cfg(
    root: str | os.PathLike, name: str, *opts: str, num_shots: int = -1, seed: int = 1, subsample: str = "all"
):
    """A frozen config for loading dataset ``name`` from ``root`` (plus extra ``KEY VALUE`` opts)."""
    from anchoropt.config import build_config

    return build_config(
        opts=[
            "DATASET.ROOT",
            str(root),
            "DATASET.NAME",
            name,
            "DATASET.NUM_SHOTS",
            str(num_shots),
            "DATASET.SUBSAMPLE_CLASSES",
            subsample,
            "SEED",
            str(seed),
            *opts,
        ]
    )


def load_dataset(root: str | os.PathLike, name: str, *opts: str, **kwargs):
    """Build the registered dataset class ``name`` on a generated root."""
    import anchoropt.datasets  # noqa: F401  (registers the datasets)
    from anchoropt.engine import DATASET_REGISTRY

    return DATASET_REGISTRY.get(name)(dataset_cfg(root, name, *opts, **kwargs))


@pytest.fixture
def generated_data_root(tmp_path) -> tuple[Path, dict[str, GeneratedDataset]]:
    """``(root, {name: GeneratedDataset})``: a data root holding generated copies of all 15 datasets."""
    root = tmp_path / "data"
    return root, write_all(root)


@pytest.fixture
def dataset_writer(tmp_path) -> Callable[..., GeneratedDataset]:
    """``writer(name, **kwargs)`` writes a generated dataset into ``writer.root`` (one root per test)."""
    root = tmp_path / "data"

    def writer(name: str, **kwargs) -> GeneratedDataset:
        return write_dataset(name, root, **kwargs)

    writer.root = root  # type: ignore[attr-defined]
    return writer
