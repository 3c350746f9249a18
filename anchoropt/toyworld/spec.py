"""The toy world's downstream datasets: names, classes, rendering style and sizes.

Plain data (no torch, no images), imported by the dataset registry (``anchoropt.datasets.toyworld``), the world
builder and the result tables. Class names are words from the grammar, so CLIP's tokenizer sees real text.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from anchoropt.toyworld.grammar import COLOURS, PATTERNS, SHAPES, class_name

# ToyNet ("the world's ImageNet") uses 8 colours x 8 shapes; the other two of each appear only in pretraining
# and in the target datasets (like classes a web-pretrained CLIP knows but ImageNet lacks).
_NET_COLOURS = [c.name for c in COLOURS[:8]]
_NET_SHAPES = [s.name for s in SHAPES[:8]]
_ALL_COLOURS = [c.name for c in COLOURS]
_ALL_SHAPES = [s.name for s in SHAPES]
_FANCY_PATTERNS = [p.name for p in PATTERNS if p.name != "plain"]


def _objects() -> tuple[str, ...]:
    """40 "pattern colour shape" classes drawn once (fixed seed) from the 300 possible ones."""
    every = [class_name(c, s, p) for p in _FANCY_PATTERNS for c in _ALL_COLOURS for s in _ALL_SHAPES]
    return tuple(random.Random("toy_objects").sample(every, 40))


@dataclass(frozen=True)
class WorldDataset:
    name: str  # DATASET_REGISTRY name
    config: str  # configs/datasets/<config>.yaml and the folder under DATASET.ROOT
    classes: tuple[str, ...]  # label order (base = first half under base-to-novel)
    style: str  # rendering style (domain), see render.STYLES
    role: str  # "source", "variant" (test-only, the source's classes) or "target"
    colours: tuple[str, ...] = tuple(_ALL_COLOURS)  # drawn from when a class name has no colour
    patterns: tuple[str, ...] = ("plain",)  # drawn from when a class name has no pattern
    size: str = ""  # "" = any object size


SOURCE = WorldDataset(
    "ToyNet", "toy_net", tuple(class_name(c, s) for c in _NET_COLOURS for s in _NET_SHAPES), "photo", "source"
)
VARIANTS = tuple(
    WorldDataset(name, config, SOURCE.classes, style, "variant")
    for name, config, style in (
        ("ToyNetFaded", "toy_net_faded", "faded"),  # ~ ImageNet-V2: the same photos, milder shift
        ("ToyNetSketch", "toy_net_sketch", "sketch"),  # ~ ImageNet-Sketch: outlines on paper
        ("ToyNetClutter", "toy_net_clutter", "clutter"),  # ~ ImageNet-A: distractors and heavy noise
        ("ToyNetPixel", "toy_net_pixel", "pixel"),  # ~ ImageNet-R: another rendering (blocky, gradients)
    )
)
TARGETS = (
    WorldDataset(
        "ToyPatterns",
        "toy_patterns",
        tuple(class_name(None, s, p) for p in _FANCY_PATTERNS for s in _ALL_SHAPES),
        "photo",
        "target",
    ),
    WorldDataset("ToyObjects", "toy_objects", _objects(), "photo", "target", size="large"),
    WorldDataset(
        "ToyShapes", "toy_shapes", tuple(_ALL_SHAPES), "clutter", "target", patterns=tuple(p.name for p in PATTERNS)
    ),
)
WORLD_DATASETS: tuple[WorldDataset, ...] = (SOURCE, *VARIANTS, *TARGETS)
BY_NAME = {d.name: d for d in WORLD_DATASETS}
BY_CONFIG = {d.config: d for d in WORLD_DATASETS}

BASE2NEW_DATASETS = (SOURCE, *TARGETS)  # what base-to-novel runs on (variants are test-only)


def lookup(name: str) -> WorldDataset:
    """A world dataset by registry or config name (case-insensitive); KeyError naming the known ones."""
    wanted = name.casefold()
    for d in WORLD_DATASETS:
        if wanted in (d.name.casefold(), d.config.casefold()):
            return d
    raise KeyError(f"unknown toy-world dataset {name!r}; known: {', '.join(d.config for d in WORLD_DATASETS)}")


def split_sizes(images_per_class: int) -> tuple[int, int, int]:
    """(train, val, test) images per class for a world built with ``images_per_class`` training images."""
    return images_per_class, max(2, images_per_class // 4), max(4, images_per_class // 2)
