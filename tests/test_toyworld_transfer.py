"""The toy world through the transfer protocols and the tools around them: the cross-dataset and DG scripts, the
demo, and the benchmark's trainers (a file of its own so that a second worker runs it beside test_toyworld.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from anchoropt.cli.results import main as results_main
from anchoropt.toyworld import spec
from anchoropt.toyworld import world as tw
from tests.support.toyworld_runs import (
    IMAGES_PER_CLASS,
    SEED,
    accuracy,
    run,
)


@pytest.mark.slow  # end to end through the protocol scripts
def test_demo_runs_the_scripts_and_tabulates_only_the_world_dataset(
    toy_world: tw.World, tmp_path: Path, capsys
) -> None:
    from anchoropt.cli.demo import main as demo_main

    argv = ["--root", str(toy_world.folder.parent), "--images-per-class", str(IMAGES_PER_CLASS)]
    assert demo_main([*argv, "--output", str(tmp_path), "--trainers", "ZeroshotCLIP"]) == 0
    out = capsys.readouterr().out
    assert "[demo] world ready" in out and str(toy_world.folder) in out  # the cached world, not a new one
    base, new = (accuracy(tmp_path, kind, "toy_net", "ZeroshotCLIP") for kind in ("train_base", "test_new"))
    (row,) = [line for line in out.splitlines() if line.startswith("ToyNet ")]
    assert f"{base:.2f} / {new:.2f} / {2 * base * new / (base + new):.2f}" in row  # the runs' own results.json
    assert "ImageNet" not in out and "not run:" not in out  # no rows for the real datasets the demo never runs


@pytest.mark.slow  # end to end through the protocol scripts
def test_cross_dataset_and_domain_generalization_scripts_fill_their_tables(
    toy_world: tw.World, tmp_path: Path, capsys
) -> None:
    trainer = "CoOp_AnchorOPT"  # the source anchor travels in the checkpoint to every target
    # two epochs of each stage: this test is about the protocol plumbing (64 source classes), not accuracy
    run("cross_dataset/train.sh", [str(SEED)], toy_world, trainer, tmp_path, epochs=2, stage1_epochs=2)
    for target in spec.TARGETS:
        run("cross_dataset/test.sh", [target.config, str(SEED)], toy_world, trainer, tmp_path)
    for variant in spec.VARIANTS:
        run("domain_generalization/test.sh", [variant.config, str(SEED)], toy_world, trainer, tmp_path)
    assert results_main([str(tmp_path), "--seeds", str(SEED), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for protocol, targets in (("cross_dataset", spec.TARGETS), ("domain_generalization", spec.VARIANTS)):
        (table,) = [t for t in report[protocol] if t["trainer"] == trainer]
        cells = {e["dataset"]: e["accuracy"] for e in table["datasets"]}
        assert list(cells) == [spec.SOURCE.name] + [d.name for d in targets]
        assert all(a is not None and a["complete"] for a in cells.values()), cells
        assert table["average"]["complete"]
        # the ToyNet model on its own shifted copies: same classes, so far above chance (1/64)
        if protocol == "domain_generalization":
            assert cells[spec.SOURCE.name]["mean"] >= 3 * 100 / len(spec.SOURCE.classes)


@pytest.mark.slow  # builds three trainers through train.py's main
def test_the_benchmark_trainers_build_on_the_world_with_their_options(toy_world: tw.World, tmp_path: Path) -> None:
    """bench/toyworld.py's other trainers, with the options protocol.py gives them and the command their script
    composes, build on the world's 3-layer CLIP (a setting sized for ViT-B/16, e.g. MaPLe's 9 prompted layers,
    stops the run)."""
    from anchoropt.cli.train import main as train_main
    from anchoropt.sweep.plan import shell_words
    from anchoropt.toyworld.protocol import script_command, script_env

    for trainer in ("CoCoOp", "MaPLe", "DePT"):
        env = script_env(toy_world, trainer, tmp_path / trainer, extra={"DRY_RUN": "1"})
        cmd = script_command("base2new/train.sh", ["toy_net", str(SEED)], toy_world, trainer)
        printed = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        (line,) = [line for line in printed.splitlines() if line.startswith("+ ")]
        argv = shell_words(line[2:])[2:]  # without the interpreter and train.py
        assert train_main(["--no-train", *argv]) == 0, trainer


def test_scripts_reject_an_unknown_cross_dataset_source(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(Path(tw.__file__).parents[2] / "scripts/cross_dataset/train.sh"), "1"],
        env={"PATH": "/usr/bin:/bin", "XD_SOURCE": "mnist", "DATA": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "XD_SOURCE must be imagenet or toy_net" in proc.stderr
