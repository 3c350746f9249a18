"""The toy world the behaviour tests share (a small copy of it, built once per session and worker process from
the committed weights) and running the protocol scripts on it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from anchoropt.toyworld import spec
from anchoropt.toyworld import world as tw
from anchoropt.toyworld.protocol import run_script

IMAGES_PER_CLASS = 12  # train 12, val 3, test 6 per class: 192 test images per ToyNet half
SEED = 1
EPOCHS = 5  # Stage II / CoOp epochs in the tests (the demo runs more)
STAGE1_EPOCHS = 10  # Stage I steps are text-only and cheap


def chance(dataset: spec.WorldDataset, half: str) -> float:
    n = len(dataset.classes)
    base = (n + 1) // 2
    return 100.0 / (base if half == "base" else n - base)


def build_test_world(tmp_path_factory: pytest.TempPathFactory) -> tw.World:
    """A small world from the committed weights (the ``toy_world`` fixture of tests/conftest.py)."""
    return tw.build_world(tmp_path_factory.mktemp("toyworld"), images_per_class=IMAGES_PER_CLASS, log=lambda _: None)


def world_dataset(world: tw.World, dataset: spec.WorldDataset, subsample: str = "all", num_shots: int = 16):
    """``dataset`` of ``world`` as train.py reads it (the registered class, seed SEED)."""
    import anchoropt.datasets  # noqa: F401  (registers the datasets, as train.py does)
    from anchoropt.config import get_default_config
    from anchoropt.engine import DATASET_REGISTRY

    cfg = get_default_config()
    cfg.DATASET.ROOT, cfg.DATASET.NAME = str(world.data_root), dataset.name
    cfg.DATASET.NUM_SHOTS, cfg.SEED, cfg.DATASET.SUBSAMPLE_CLASSES = num_shots, SEED, subsample
    return DATASET_REGISTRY.get(dataset.name)(cfg)


def run_dir(output: Path, kind: str, dataset: str, trainer: str, protocol: str = "base2new") -> Path:
    """The one run folder of ``trainer`` (seed SEED) the scripts wrote under ``output/<protocol>/<kind>/<dataset>``."""
    found = list(output.glob(f"{protocol}/{kind}/{dataset}/shots_16/{trainer}/*/seed{SEED}"))
    assert len(found) == 1, f"expected one {trainer} run under {output}/{protocol}/{kind}/{dataset}, found {found}"
    return found[0]


def accuracy(output: Path, kind: str, dataset: str, trainer: str, protocol: str = "base2new") -> float:
    results = run_dir(output, kind, dataset, trainer, protocol) / "results.json"
    return json.loads(results.read_text())["metrics"]["accuracy"]


def run(
    script: str,
    args: list[str],
    world: tw.World,
    trainer: str,
    output: Path,
    epochs: int = EPOCHS,
    stage1_epochs: int = STAGE1_EPOCHS,
) -> None:
    log = output / "log.txt"
    try:
        run_script(script, args, world, trainer, output, log_file=log, epochs=epochs, stage1_epochs=stage1_epochs)
    except subprocess.CalledProcessError:
        pytest.fail(f"{script} {' '.join(args)} with {trainer} failed:\n" + log.read_text()[-3000:])
