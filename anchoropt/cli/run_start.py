"""What ``train.py`` settles before a run builds anything: checks, the drawn seed, the worker count, the header.

Each check fails with one line that names the key at fault; the header is the few
lines a person needs on the console (the full arguments and config go to the log file).
"""

from __future__ import annotations

import difflib
import os
import secrets
from typing import Any, Iterable

from anchoropt.errors import ConfigError

SEED_RANGE = 2**31  # what numpy's legacy seeding accepts


def closest_names(name: str, known: Iterable[str], n: int = 1) -> list[str]:
    """The known names most like ``name`` (case-insensitive), best first."""
    known = list(known)
    lowered = {k.lower(): k for k in known}
    if name.lower() in lowered:
        return [lowered[name.lower()]]
    return [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    match = closest_names(name, known)
    return f"did you mean {match[0]!r}? " if match else ""


def check_epochs(cfg: Any, trains: bool) -> None:
    """A training run needs at least one epoch (0 would test an untrained model and look finished)."""
    if trains and cfg.OPTIM.MAX_EPOCH < 1:
        raise ConfigError(
            f"OPTIM.MAX_EPOCH is {cfg.OPTIM.MAX_EPOCH}: a training run needs at least 1 epoch "
            "(to evaluate without training use --eval-only)"
        )


def settle_seed(cfg: Any) -> str:
    """A negative SEED ("random") becomes a drawn one, recorded like any seed (results, few-shot cache),
    so the run can be repeated; return a note for the header ('' for a given seed)."""
    if cfg.SEED >= 0:
        return ""
    drawn = secrets.randbelow(SEED_RANGE)
    cfg.defrost()
    cfg.SEED = drawn
    cfg.freeze()
    return f"seed {drawn} drawn at random (--seed was negative); --seed {drawn} repeats this run"


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cap_workers(cfg: Any) -> str:
    """Cap DATALOADER.NUM_WORKERS at the CPUs this process may use; return a note when it was lowered."""
    cpus = usable_cpus()
    wanted = cfg.DATALOADER.NUM_WORKERS
    if wanted <= cpus:
        return ""
    cfg.defrost()
    cfg.DATALOADER.NUM_WORKERS = cpus
    cfg.freeze()
    return f"data loader workers: {cpus} (DATALOADER.NUM_WORKERS {wanted} capped at the {cpus} usable CPUs)"


def precision_text(cfg: Any, trainer_class: type) -> str:
    key = getattr(trainer_class, "PREC_KEY", "")
    if not key:
        return "fp32"
    node = cfg
    for part in key.split("."):
        node = node[part]
    import torch

    if node == "fp16" and not (cfg.USE_CUDA and torch.cuda.is_available()):
        return f"fp32 ({key} fp16 needs a CUDA device)"
    return f"{node} ({key})"


def header_lines(cfg: Any, trainer_class: type, mode: str, notes: Iterable[str]) -> list[str]:
    """The console header: what runs, on what, where."""
    ds = cfg.DATASET
    shots = f"{ds.NUM_SHOTS} shots" if ds.NUM_SHOTS > 0 else "all images"
    name, path = cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.PATH
    backbone = f"{name} from {path}" if name and path else name or path or "(none)"
    lines = [
        f"{mode} {cfg.TRAINER.NAME} on {ds.NAME} ({ds.SUBSAMPLE_CLASSES} classes, {shots}, seed {cfg.SEED})",
        f"backbone: {backbone}; precision: {precision_text(cfg, trainer_class)}",
        f"output: {cfg.OUTPUT_DIR} (full arguments and config in its log.txt)",
    ]
    return lines + [n for n in notes if n]
