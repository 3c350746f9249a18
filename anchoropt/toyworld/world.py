"""Build (or find) the toy world: the pretrained tiny CLIP and the downstream datasets in CoOp's on-disk layout.

Layout under the world folder (default ``~/.cache/anchoropt/toyworld/<recipe version>``):

    clip.pt                                  full CLIP state dict (``MODEL.BACKBONE.PATH``)
    world.json                               recipe, sizes and where the weights came from
    data/<config>/images/<class>/<k>.png     one folder per dataset (``--root data``)
    data/<config>/split_zhou_<Name>.json     CoOp's split file

The weights come from the compact file committed with the package when its recipe is the current one, else
from pretraining (minutes of CPU). A world is rebuilt only when its recipe version or sizes change.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from anchoropt.datasets.splits import save_split
from anchoropt.engine import Datum
from anchoropt.errors import CheckpointError
from anchoropt.fileio import atomic_write_bytes
from anchoropt.toyworld import spec
from anchoropt.toyworld.grammar import Scene, describe, parse_class_name
from anchoropt.toyworld.pretrain import Recipe, compact_weights, expand_compact, pretrain, used_token_ids
from anchoropt.toyworld.render import render

ROOT_ENV = "ANCHOROPT_TOYWORLD_ROOT"
COMMITTED_WEIGHTS = Path(__file__).with_name("weights") / "toyworld_clip.pt"
WORLD_FILE = "world.json"
DEFAULT_IMAGES_PER_CLASS = 32  # training images per class (val: 1/4, test: 1/2 of it); 16 shots are sampled
SEED = 0  # the images' seed (the weights' seed is in the recipe)
LAYOUT = 2  # bump when the files written change: older worlds are rebuilt


def default_root() -> Path:
    """``$ANCHOROPT_TOYWORLD_ROOT``, else the user's cache directory (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "anchoropt" / "toyworld"


@dataclass(frozen=True)
class World:
    """A built world: where its weights and data are."""

    folder: Path

    @property
    def clip_path(self) -> Path:
        return self.folder / "clip.pt"

    @property
    def data_root(self) -> Path:
        return self.folder / "data"

    @property
    def info(self) -> dict:
        return json.loads((self.folder / WORLD_FILE).read_text())

    def options(self) -> list[str]:
        """The ``KEY VALUE`` options every ``train.py`` call on this world needs (backbone file, image size)."""
        recipe = Recipe.from_json(json.dumps(self.info["recipe"]))
        # NAME only labels the runs (results files, tables); PATH is what is loaded
        return [
            "MODEL.BACKBONE.NAME",
            f"ToyCLIP/{recipe.version}",
            "MODEL.BACKBONE.PATH",
            str(self.clip_path),
            "INPUT.SIZE",
            f"({recipe.image_size}, {recipe.image_size})",
        ]


def load_committed_weights(path: Path = COMMITTED_WEIGHTS) -> tuple[dict, Recipe]:
    """The committed compact weights, expanded to a full CLIP state dict, and the recipe that made them."""
    if not path.is_file():
        raise CheckpointError(
            f"toy-world weights not found: {path} (re-create them with `anchoropt-toyworld pretrain --save-committed`)"
        )
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return expand_compact(blob), Recipe.from_json(blob["recipe"])


def save_committed_weights(state: dict, recipe: Recipe, path: Path = COMMITTED_WEIGHTS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(compact_weights(state, used_token_ids(), recipe), path)
    return path


def build_world(
    root: Optional[os.PathLike] = None,
    images_per_class: int = DEFAULT_IMAGES_PER_CLASS,
    recipe: Optional[Recipe] = None,
    force_pretrain: bool = False,
    log: Callable[[str], None] = print,
) -> World:
    """The world for ``recipe`` (default: the current one) under ``root``; built only what is missing or stale."""
    recipe = recipe or Recipe()
    suffix = "" if images_per_class == DEFAULT_IMAGES_PER_CLASS else f"-{images_per_class}img"
    world = World(Path(root or default_root()).expanduser() / f"{recipe.version}{suffix}")
    wanted = {
        "recipe": json.loads(recipe.to_json()),
        "images_per_class": images_per_class,
        "image_seed": SEED,
        "layout": LAYOUT,
    }
    info_path = world.folder / WORLD_FILE
    if info_path.is_file() and world.clip_path.is_file() and not force_pretrain:
        have = json.loads(info_path.read_text())
        if {k: have.get(k) for k in wanted} == wanted:
            return world
    started = time.time()
    world.folder.mkdir(parents=True, exist_ok=True)
    log(f"Building the toy world in {world.folder}")
    state, weights_from = _weights(recipe, force_pretrain, log)
    tmp = world.clip_path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, world.clip_path)
    for dataset in spec.WORLD_DATASETS:
        write_dataset(world.data_root, dataset, images_per_class)
    info = {**wanted, "weights": weights_from, "build_seconds": round(time.time() - started, 1)}
    # written last: its presence means the world is complete
    atomic_write_bytes(str(info_path), json.dumps(info, indent=1).encode())
    log(f"Toy world ready in {time.time() - started:.0f}s: weights from {weights_from}")
    return world


def _weights(recipe: Recipe, force_pretrain: bool, log: Callable[[str], None]) -> tuple[dict, str]:
    if not force_pretrain and COMMITTED_WEIGHTS.is_file():
        state, committed = load_committed_weights()
        if committed == recipe:
            return state, f"{COMMITTED_WEIGHTS.name} (committed, recipe {recipe.version})"
        log(f"The committed weights were made by recipe {committed.version}, not {recipe.version}: pretraining")
    return pretrain(recipe, log=log), f"pretrained here (recipe {recipe.version})"


def scene_for(dataset: spec.WorldDataset, name: str, rng: random.Random) -> Scene:
    """The scene of one image of class ``name``: attributes the name leaves open are drawn from ``rng``."""
    pattern, colour, shape = parse_class_name(name)
    return Scene(
        colour or rng.choice(dataset.colours),
        shape,
        pattern or rng.choice(dataset.patterns),
        dataset.size,
        dataset.style,
    )


def write_dataset(data_root: Path, dataset: spec.WorldDataset, images_per_class: int) -> None:
    """Draw one dataset's images (reproducible per image) and write its ``split_zhou_<Name>.json``."""
    folder = data_root / dataset.config
    image_dir = folder / "images"
    sizes = dict(zip(("train", "val", "test"), spec.split_sizes(images_per_class)))
    if dataset.role == "variant":  # test-only, like the ImageNet variants
        sizes = {"train": 0, "val": 0, "test": sizes["test"]}
    splits: dict[str, list] = {k: [] for k in sizes}
    for label, name in enumerate(dataset.classes):
        class_dir = image_dir / name.replace(" ", "_")
        class_dir.mkdir(parents=True, exist_ok=True)
        for split, count in sizes.items():
            for k in range(count):
                rng = random.Random(f"{SEED}:{dataset.name}:{name}:{split}:{k}")
                path = class_dir / f"{split}_{k:03d}.png"
                render(scene_for(dataset, name, rng), rng).save(path)
                splits[split].append(Datum(impath=str(path), label=label, classname=name))
    if dataset.role == "variant":  # a split file needs a train list: test-only sets list their images as both
        splits["train"] = splits["test"]
    save_split(
        splits["train"], splits["val"], splits["test"], str(folder / f"split_zhou_{dataset.name}.json"), str(image_dir)
    )


DESCRIPTIONS_PER_CLASS = 10


def descriptions_for(dataset: spec.WorldDataset) -> dict[str, list[str]]:
    """CuPL-format descriptions of every class of ``dataset`` (generated from the grammar: the LLM stand-in)."""
    return {name: describe(name, DESCRIPTIONS_PER_CLASS) for name in dataset.classes}


def write_descriptions(folder: os.PathLike) -> list[Path]:
    """``<folder>/<Name>.json`` for every trainable world dataset (committed under descriptions/)."""
    paths = []
    for dataset in spec.BASE2NEW_DATASETS:
        path = Path(folder) / f"{dataset.name}.json"
        atomic_write_bytes(str(path), (json.dumps(descriptions_for(dataset), indent=1) + "\n").encode())
        paths.append(path)
    return paths
