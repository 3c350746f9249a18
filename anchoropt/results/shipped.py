"""How a run's config differs from the shipped config it was built from (for marking table groups).

The shipped config of a run is what this checkout's ``configs/`` give for the
config files the run named (the shared trainer config, its per-dataset or
protocol layer, the dataset config) with no extra options. A run's
*deviations* are the result keys (`anchoropt.runs.identity`) whose value
differs from it, apart from the keys a table cell is about anyway (seed,
dataset, classes, shots, trainer, backbone, the anchor file of a Stage II
run). An evaluation is judged by the training run it loaded, so the base and
novel halves of one base-to-novel run always fall into one group.
"""

from __future__ import annotations

import functools
import os
import os.path as osp
from typing import Any, Mapping, Optional

from anchoropt.runs.identity import flat_config, is_result_key

#: Keys a table shows by their own (its cell, its column's trainer and backbone), never as a deviation.
CELL_KEYS = frozenset(
    {
        "SEED",
        "DATASET.NAME",
        "DATASET.SUBSAMPLE_CLASSES",
        "DATASET.NUM_SHOTS",
        "TRAINER.NAME",
        "MODEL.BACKBONE.NAME",
        "MODEL.BACKBONE.PATH",
        "TRAINER.ANCHOROPT.ANCHOR_PATH",
    }
)
CONFIGS_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), "configs")

Deviation = tuple[str, Any, Any]  # (key, run's value, shipped value)


def shipped_path(recorded: str) -> Optional[str]:
    """This checkout's copy of a recorded config file (``.../configs/trainers/CoOp/vit_b16.yaml``), or None."""
    parts = osp.normpath(recorded).split(os.sep)
    if "configs" not in parts:
        return None
    index = len(parts) - 1 - parts[::-1].index("configs")
    ours = osp.join(CONFIGS_DIR, *parts[index + 1 :])
    return ours if osp.isfile(ours) else None


@functools.lru_cache(maxsize=256)
def _shipped_flat(dataset_config_file: str, config_files: tuple[str, ...]) -> Optional[dict[str, Any]]:
    import trainers  # noqa: F401  (registers every trainer's config keys)
    from anchoropt.config import build_config
    from anchoropt.errors import UserError

    files = [shipped_path(f) for f in config_files]
    dataset_file = shipped_path(dataset_config_file) if dataset_config_file else ""
    if any(f is None for f in files) or dataset_file is None:
        return None
    try:
        return flat_config(build_config(dataset_file, files))
    except UserError:
        return None


def deviations(
    config: Mapping[str, Any], config_files: str, dataset_config_file: str
) -> Optional[tuple[Deviation, ...]]:
    """The result keys of ``config`` (flat) that differ from the shipped config; None when a config file the
    run named is not one of this checkout's (a custom config: nothing to compare with)."""
    files = tuple(f for f in (config_files or "").split(",") if f)
    if not files:
        return None
    shipped = _shipped_flat(dataset_config_file or "", files)
    if shipped is None:
        return None
    trainer = str(config.get("TRAINER.NAME", ""))
    out = []
    for key in sorted(config):
        if key in CELL_KEYS or not is_result_key(key, trainer) or key not in shipped:
            continue
        if config[key] != shipped[key]:
            out.append((key, config[key], shipped[key]))
    return tuple(out)
