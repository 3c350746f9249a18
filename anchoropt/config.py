"""Building the run config: engine defaults + project keys + every trainer's node.

Each trainer module declares its own config node next to the trainer with
``@register_config_node``; ``get_default_config`` applies them all, so a yaml
file or command-line option for any registered trainer merges.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from yacs.config import CfgNode as CN

from anchoropt.errors import ConfigError

_CONFIG_NODES: list[Callable[[CN], None]] = []


def register_config_node(fn: Callable[[CN], None]) -> Callable[[CN], None]:
    """Decorator: ``fn(cfg)`` adds a trainer's keys to the default config."""
    if fn not in _CONFIG_NODES:
        _CONFIG_NODES.append(fn)
    return fn


def add_project_keys(cfg: CN) -> None:
    """Keys every trainer and dataset here understands, beyond Dassl's defaults."""
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"  # all, base or new (base-to-novel protocol)
    # A benchmark whose split_zhou_*.json is missing is an error; True builds a new random split instead, as CoOp
    # does silently (its images differ from the published protocol's, so results are not comparable).
    cfg.DATASET.RANDOM_SPLIT_IF_MISSING = False
    cfg.MODEL.BACKBONE.PATH = ""  # local CLIP weights file (JIT archive or state dict); overrides NAME lookup
    # Provenance recorded in each results file (train.py and the protocol scripts fill these in).
    cfg.RUN = CN()
    cfg.RUN.CONFIG_FILE = ""
    cfg.RUN.DATASET_CONFIG_FILE = ""
    cfg.RUN.PROTOCOL = ""  # base2new / cross_dataset / domain_generalization
    # Frozen image features (anchoropt/features, trainers/frozen_features.py).
    cfg.FEATURE_CACHE = CN()
    cfg.FEATURE_CACHE.ENABLED = True  # evaluation: test features of a frozen image encoder cached on disk
    cfg.FEATURE_CACHE.DIR = ""  # "" = $ANCHOROPT_FEATURE_CACHE, else ~/.cache/anchoropt/features
    cfg.FEATURE_CACHE.TRAIN_VIEWS = 0  # K > 0: K augmented views per training image encoded once (opt-in)


def get_default_config() -> CN:
    from anchoropt.engine import get_cfg_default

    cfg = get_cfg_default()
    add_project_keys(cfg)
    for add_node in _CONFIG_NODES:
        add_node(cfg)
    return cfg


def _merge_list(cfg: CN, opts: list[str], origin: str) -> None:
    if len(opts) % 2:
        raise ConfigError(f"{origin}: config options must come in KEY VALUE pairs, got {opts}")
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, AssertionError, ValueError) as e:
        raise ConfigError(f"{origin}: {_yacs_message(e)}") from None


def _yacs_message(e: Exception) -> str:
    msg = e.args[0] if e.args else str(e)
    if isinstance(msg, str) and msg.startswith("Non-existent"):
        return msg + " (unknown config key; check the spelling, or that the trainer defining it is registered)"
    return str(msg)


def merge_file(cfg: CN, path: str) -> None:
    import os

    if not os.path.isfile(path):
        raise ConfigError(f"Config file not found: {path}")
    try:
        cfg.merge_from_file(path)
    except (KeyError, AssertionError, ValueError) as e:
        raise ConfigError(f"{path}: {_yacs_message(e)}") from None


def build_config(
    dataset_config_file: str = "",
    config_file: str | Iterable[str] = "",
    opts: Iterable[str] = (),
    overrides: dict[str, Any] | None = None,
    freeze: bool = True,
) -> CN:
    """Defaults <- dataset yaml <- method yaml(s), in order <- ``overrides`` (CLI flags) <- trailing ``opts``."""
    cfg = get_default_config()
    if dataset_config_file:
        merge_file(cfg, dataset_config_file)
    for path in [config_file] if isinstance(config_file, str) else config_file:
        if path:
            merge_file(cfg, path)
    for key, value in (overrides or {}).items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    _merge_list(cfg, list(opts), "command-line options")
    if freeze:
        cfg.freeze()
    return cfg
