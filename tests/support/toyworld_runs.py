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


def accuracy(output: Path, kind: str, dataset: str, trainer: str, protocol: str = "base2new") -> float:
    files = list(output.glob(f"{protocol}/{kind}/{dataset}/shots_16/{trainer}/*/seed{SEED}/results.json"))
    assert len(files) == 1, f"expected one {trainer} results file under {output}/{protocol}/{kind}/{dataset}"
    return json.loads(files[0].read_text())["metrics"]["accuracy"]


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
