"""File, JSON, seeding and string helpers with Dassl's names and behaviour."""

from __future__ import annotations

import difflib
import json
import os
import os.path as osp
import random
import warnings
from typing import Any, Iterable

import numpy as np
import torch
from PIL import Image

from anchoropt.fileio import atomic_write_bytes


def mkdir_if_missing(dirname: str) -> None:
    if dirname:
        os.makedirs(dirname, exist_ok=True)


def check_isfile(fpath: str) -> bool:
    isfile = osp.isfile(fpath)
    if not isfile:
        warnings.warn(f'No file found at "{fpath}"')
    return isfile


def read_json(fpath: str) -> Any:
    with open(fpath, "r") as f:
        return json.load(f)


def write_json(obj: Any, fpath: str) -> None:
    """Write JSON atomically (same indentation as Dassl)."""
    text = json.dumps(obj, indent=4, separators=(",", ": "))
    atomic_write_bytes(fpath, text.encode("utf-8"))


def set_random_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def read_image(path: str) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


def listdir_nohidden(path: str, sort: bool = False) -> list[str]:
    items = [f for f in os.listdir(path) if not f.startswith(".")]
    if sort:
        items.sort()
    return items


def get_most_similar_str_to_a_from_b(a: str, b: Iterable[str]) -> str | None:
    best, best_sim = None, -1.0
    for candidate in b:
        sim = difflib.SequenceMatcher(None, a, candidate).ratio()
        if sim >= best_sim:
            best, best_sim = candidate, sim
    return best


def check_availability(requested: str, available: list[str]) -> None:
    if requested not in available:
        guess = get_most_similar_str_to_a_from_b(requested, available)
        raise ValueError(
            f"The requested one is expected to belong to {available}, but got [{requested}] (do you mean [{guess}]?)"
        )


def tolist_if_not(x: Any) -> list:
    return x if isinstance(x, list) else [x]


def count_num_param(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
