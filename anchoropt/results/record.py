"""One results file per evaluation: what ran, on what, and every metric at full precision.

Tables are built from these files (``anchoropt-results``), never from logs.
"""

from __future__ import annotations

import datetime
import os.path as osp
import platform
from typing import Any, Mapping

from anchoropt.runs.identity import IDENTITY_FILE

SCHEMA = "anchoropt.results/1"
RESULTS_FILE = "results.json"


def results_file_name(split: str) -> str:
    """``results.json`` for the test split, ``results_<split>.json`` for others (val)."""
    return RESULTS_FILE if split == "test" else f"results_{split}.json"


def package_versions() -> dict[str, str]:
    import torch
    import torchvision

    import anchoropt

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "anchoropt": anchoropt.__version__,
    }
    try:
        from importlib.metadata import version

        versions["openai-clip"] = version("openai-clip")
    except Exception:  # not installed as a distribution (e.g. a source checkout on PYTHONPATH)
        pass
    return versions


def config_name(config_files: str) -> str:
    """``configs/trainers/CoOp/vit_b16_ep50.yaml`` -> ``vit_b16_ep50`` (the first of a comma-separated list)."""
    first = config_files.split(",")[0] if config_files else ""
    return osp.splitext(osp.basename(first))[0] if first else ""


def build_record(
    cfg: Any,
    split: str,
    metrics: Mapping[str, float],
    *,
    engine: str,
    num_classes: int,
    num_samples: int,
    wall_time_s: float,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    identity = _run_identity(cfg)
    record = {
        "schema": SCHEMA,
        "protocol": cfg.RUN.PROTOCOL,
        "trainer": cfg.TRAINER.NAME,
        "dataset": cfg.DATASET.NAME,
        "subsample": cfg.DATASET.SUBSAMPLE_CLASSES,
        "split": split,
        "num_shots": cfg.DATASET.NUM_SHOTS,
        "seed": cfg.SEED,
        "backbone": cfg.MODEL.BACKBONE.NAME,
        "config_name": config_name(cfg.RUN.CONFIG_FILE),
        "config_file": cfg.RUN.CONFIG_FILE,
        "dataset_config_file": cfg.RUN.DATASET_CONFIG_FILE,
        "num_classes": num_classes,
        "num_samples": num_samples,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "engine": engine,
        "versions": package_versions(),
        "wall_time_s": wall_time_s,
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": identity["fingerprint"],
        "model": identity.get("model"),
        "anchor_identity": identity.get("anchor"),
        "config": cfg.dump(),
    }
    record.update(extra or {})
    return record


def _run_identity(cfg: Any) -> dict:
    """The identity train.py recorded for this output directory (it knows the model an evaluation loaded), else
    the one ``cfg`` alone gives (a trainer driven from Python)."""
    from anchoropt.runs.identity import recorded_identity, run_identity

    identity = run_identity(cfg)
    recorded = recorded_identity(cfg.OUTPUT_DIR) if osp.isfile(osp.join(cfg.OUTPUT_DIR, IDENTITY_FILE)) else None
    if recorded is not None and recorded.get("config") == identity["config"]:
        return recorded
    return identity


TIMING_KEYS = ("wall_time_s", "finished_at")
