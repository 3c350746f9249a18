"""A new user's mistakes, each caught early in one line with a way forward (issue: first contact).

Every mistake goes through train.py's console entry (``run_cli(main)``, in process, or the real
``train.py`` in a subprocess where a process matters) and checks the exit code, that the message
is one line naming the fault, that no traceback is printed and that no earlier file changed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from anchoropt.backbone import precision
from anchoropt.cli import descriptions as descriptions_cli
from anchoropt.cli import positions as positions_cli
from anchoropt.cli import prepare_data
from anchoropt.cli import results as results_cli
from anchoropt.cli import train as train_cli
from anchoropt.cli.errors import run_cli
from anchoropt.cli.output_lock import LOCK_NAME
from anchoropt.engine.checkpoint import load_checkpoint
from anchoropt.method.position_plot import CHOSEN_COLOUR, HIGH_COLOUR, LOW_COLOUR, HeatmapLayout, render_position_matrix
from tests.support.anchoropt_runs import make_tiny_env
from tests.support.clip_fixtures import tiny_clip, tiny_clip_dir, tiny_clip_state_dict_file  # noqa: F401
from tests.support.data_layouts import write_dataset
from tests.support.engine_runs import REPO, run_train_subprocess
from tests.support.toy_plugin import ToyLinear, write_toy_colors

TOY_PLUGIN = ("--plugin", "tests.support.toy_plugin")


# ---- helpers -------------------------------------------------------------------------------------
def train(argv: list[str], capsys) -> tuple[int, str, str]:
    """train.py's console entry in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = run_cli(train_cli.main)(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(err: str, *parts: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict[str, tuple[int, str, int]]:
    """Every file under ``folder`` (hidden ones too): (mtime_ns, sha256, mode)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def toy_args(root: Path | str, out: Path | str, *opts: str, epochs: int = 2, flags: tuple[str, ...] = ()) -> list[str]:
    return [
        *TOY_PLUGIN,
        "--root",
        str(root),
        "--seed",
        "1",
        "--trainer",
        "ToyLinear",
        "--output-dir",
        str(out),
        *flags,
        "DATASET.NAME",
        "ToyColors",
        "INPUT.SIZE",
        "(8, 8)",
        "DATALOADER.NUM_WORKERS",
        "0",
        "DATALOADER.TRAIN_X.BATCH_SIZE",
        "8",
        "OPTIM.NAME",
        "sgd",
        "OPTIM.LR",
        "0.05",
        "OPTIM.MAX_EPOCH",
        str(epochs),
        *opts,
    ]


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    write_toy_colors(str(root))
    return root


@pytest.fixture(scope="module")
def finished_toy_run(toy_root, tmp_path_factory) -> Path:
    """A finished toy run: a later failed start in its folder must not change any of its files."""
    out = tmp_path_factory.mktemp("toy_runs") / "finished"
    assert run_cli(train_cli.main)(toy_args(toy_root, out)) == 0
    return out


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory, tiny_clip_state_dict_file):  # noqa: F811
    return make_tiny_env(tmp_path_factory.mktemp("first_contact"), tiny_clip_state_dict_file)


@pytest.fixture
def toy_root_with_bad_images(toy_root, tmp_path) -> tuple[Path, list[Path]]:
    root = tmp_path / "toy_bad"
    shutil.copytree(toy_root, root)
    empty = root / "toy_colors" / "test" / "green" / "2.png"
    empty.write_bytes(b"")
    garbage = root / "toy_colors" / "test" / "blue" / "0.png"
    garbage.write_bytes(b"<html>404 Not Found</html>\n" * 10)
    return root, [empty, garbage]


# ---- the output directory ------------------------------------------------------------------------
def test_output_dir_under_a_regular_file_is_one_line_in_a_real_process(toy_root, tmp_path):
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder\n")
    proc = run_train_subprocess(toy_args(toy_root, blocker / "run"))
    assert proc.returncode == 2
    one_line_error(proc.stderr, f"cannot create output directory {blocker / 'run'}", f"{blocker} is a file")
    assert blocker.read_text() == "not a folder\n"


def test_output_dir_that_cannot_be_created(toy_root, tmp_path, capsys, monkeypatch):
    rc, _, err = train(toy_args(toy_root, "/proc/anchoropt-first-contact/run"), capsys)
    assert rc == 2
    one_line_error(err, "cannot create output directory /proc/anchoropt-first-contact/run:")
    # A read-only parent (tests may run as root, who may write anywhere: the permission check is simulated).
    parent = tmp_path / "read_only"
    parent.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(parent) else real_access(p, mode))
    rc, _, err = train(toy_args(toy_root, parent / "run"), capsys)
    assert rc == 2
    one_line_error(err, f"cannot create output directory {parent / 'run'}: permission denied in {parent}")
    assert list(parent.iterdir()) == []


def test_a_failed_first_run_creates_nothing_and_a_failed_rerun_changes_nothing(
    toy_root_with_bad_images, finished_toy_run, tmp_path, capsys
):
    bad_root, _ = toy_root_with_bad_images  # the trainer is built, then its inputs turn out unusable
    out = tmp_path / "new_run"
    rc, _, err = train(toy_args(bad_root, out), capsys)
    assert rc == 2 and err.startswith("error: ") and "Traceback" not in err
    assert not out.exists()  # no folder, no log.txt, no lock file
    before = snapshot(finished_toy_run)
    assert LOCK_NAME in before and "log.txt" in before
    rc, _, err = train(toy_args(bad_root, finished_toy_run, epochs=4), capsys)
    assert rc == 2 and "Traceback" not in err
    assert snapshot(finished_toy_run) == before


# ---- checks before anything runs -----------------------------------------------------------------
def test_zero_epochs_is_an_error_that_leaves_a_finished_run_alone(toy_root, finished_toy_run, tmp_path, capsys):
    before = snapshot(finished_toy_run)
    rc, _, err = train(toy_args(toy_root, finished_toy_run, epochs=0), capsys)
    assert rc == 2
    one_line_error(err, "OPTIM.MAX_EPOCH is 0", "at least 1 epoch", "--eval-only")
    assert snapshot(finished_toy_run) == before
    rc, _, _ = train(toy_args(toy_root, tmp_path / "fresh", epochs=0), capsys)
    assert rc == 2 and not (tmp_path / "fresh").exists()


def test_trainer_typo_names_the_closest_match(toy_root, tmp_path, capsys):
    rc, _, err = train(toy_args(toy_root, tmp_path / "out", "TRAINER.NAME", "toylinaer"), capsys)
    assert rc == 2
    line = one_line_error(err, "Unknown trainer 'toylinaer' (--trainer); did you mean 'ToyLinear'?", "CoOp_AnchorOPT")
    assert "registered: " in line
    assert not (tmp_path / "out").exists()


# ---- images --------------------------------------------------------------------------------------
def test_unreadable_images_are_reported_before_the_first_training_step(toy_root_with_bad_images, tmp_path, capsys):
    root, (empty, garbage) = toy_root_with_bad_images
    out = tmp_path / "out"
    rc, stdout, err = train(toy_args(root, out), capsys)
    assert rc == 2
    one_line_error(err, "2 of the ", f"{empty} (empty file)", f"{garbage} (not an image)")
    assert "epoch [" not in stdout
    assert not out.exists()  # no step, no checkpoint, no log


def test_prepare_data_reports_an_unreadable_image(tmp_path, capsys):
    info = write_dataset("OxfordPets", tmp_path / "data", n_classes=3, n_per_class=10)
    bad = info.images[-1]
    bad.write_bytes(b"")
    capsys.readouterr()
    assert prepare_data.main(["--root", str(tmp_path / "data"), "--datasets", "OxfordPets"]) == 1
    out = capsys.readouterr().out
    assert "error" in out and f"{bad} (empty file)" in out and "not readable images" in out


def test_a_truncated_image_file_with_a_valid_header_passes_only_the_cheap_check(tmp_path):
    """The check reads headers (cheap); what it cannot see is left to the loader's per-file error."""
    from anchoropt.datasets.image_check import image_problem

    good = tmp_path / "a.jpg"
    Image.new("RGB", (16, 16), (10, 20, 30)).save(good)
    assert image_problem(str(good)) is None
    tiff_like = tmp_path / "b.tif"
    Image.new("RGB", (4, 4)).save(tiff_like)
    assert image_problem(str(tiff_like)) is None
    ppm = tmp_path / "c.ppm"  # no fast-path signature: PIL identifies it from its header
    Image.new("RGB", (4, 4)).save(ppm)
    assert image_problem(str(ppm)) is None
    zeros = tmp_path / "d.jpg"
    zeros.write_bytes(b"\0" * 512)
    assert image_problem(str(zeros)) == "not an image"


# ---- few-shot: too few images, random seeds ------------------------------------------------------
def tiny_args(env, out: Path, *opts: str, trainer: str = "CoOp", seed: str = "1", flags=()) -> list[str]:
    args = env.args(trainer, out, "OPTIM.MAX_EPOCH", "1", *opts, flags=flags)
    args[args.index("--seed") + 1] = seed
    return args


def test_more_shots_than_images_warns_with_classes_and_counts_and_records_the_shots(tiny_env, tmp_path, capsys):
    out = tmp_path / "shots"
    rc, stdout, err = train(tiny_args(tiny_env, out, "DATASET.NUM_SHOTS", "32"), capsys)
    assert rc == 0, err
    train_per_class = tiny_env.dataset.per_class["train"]
    base = tiny_env.base_classes
    (line,) = [line for line in err.splitlines() if "NUM_SHOTS" in line]
    assert line.startswith("warning: DATASET.NUM_SHOTS is 32 but 3 of 3 classes have fewer training images")
    assert all(f"{name} {train_per_class}" in line for name in base), line
    shots = json.loads((out / "results.json").read_text())["shots"]
    assert shots == {
        "requested": 32,
        "min": train_per_class,
        "max": train_per_class,
        "fewer": {name: train_per_class for name in base},
    }


def test_random_seed_is_drawn_printed_recorded_and_never_cached_as_seed_minus_1(tiny_env, tmp_path, capsys):
    fewshot = tiny_env.root / "data" / "oxford_pets" / "split_fewshot"
    out = tmp_path / "random"
    rc, stdout, err = train(
        tiny_args(tiny_env, out, "DATASET.NUM_SHOTS", "2", seed="-1", trainer="ZeroshotCLIP", flags=("--eval-only",)),
        capsys,
    )
    assert rc == 0, err
    drawn = int(re.search(r"seed (\d+) drawn at random \(--seed was negative\); --seed \1 repeats", stdout).group(1))
    assert json.loads((out / "results.json").read_text())["seed"] == drawn
    assert f"SEED: {drawn}" in (out / "log.txt").read_text()
    assert (fewshot / f"shot_2-seed_{drawn}.json").is_file()
    assert not list(fewshot.glob("*seed_-1*"))


# ---- files follow the umask ----------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_output_files_and_the_fewshot_cache_follow_the_umask(tiny_env, tmp_path, capsys, umask):
    fewshot = tiny_env.root / "data" / "oxford_pets" / "split_fewshot" / f"shot_3-seed_{umask}.json"
    out = tmp_path / "modes"
    old = os.umask(umask)
    try:
        rc, _, err = train(tiny_args(tiny_env, out, "DATASET.NUM_SHOTS", "3", seed=str(umask)), capsys)
    finally:
        os.umask(old)
    assert rc == 0, err
    files = [p for p in out.rglob("*") if p.is_file()] + [fewshot]
    assert {"results.json", "model.pth.tar-1", "checkpoint", "log.txt", "train_history.jsonl"} <= {
        p.name for p in files
    }
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o666 & ~umask for p in files}


# ---- the console: header, warnings, workers ------------------------------------------------------
def test_console_shows_a_short_header_the_log_the_full_config_and_the_fp16_warning_once(
    tiny_env, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(precision, "_warned", set())  # as in a fresh process
    out = tmp_path / "header"
    rc, stdout, err = train(
        tiny_args(
            tiny_env,
            out,
            *("DATASET.NUM_SHOTS", "2", "TRAINER.COOP.PREC", "fp16", "DATALOADER.NUM_WORKERS", "64"),
            flags=("--no-train",),
        ),
        capsys,
    )
    assert rc == 0, err
    head = stdout.split("Loading trainer")[0].strip().splitlines()
    assert len(head) <= 6, head
    text = "\n".join(head)
    for part in (
        "Training CoOp on OxfordPets",
        "base classes",
        "seed 1",
        f"backbone: {tiny_env.clip_file}",
        "precision: fp32 (TRAINER.COOP.PREC fp16 needs a CUDA device)",
        f"output: {out}",
    ):
        assert part in text, part
    cpus = len(os.sched_getaffinity(0))
    assert f"data loader workers: {cpus} (DATALOADER.NUM_WORKERS 64 capped at the {cpus} usable CPUs)" in text
    log = (out / "log.txt").read_text()
    assert "** Config **" not in stdout and "** Config **" in log and f"NUM_WORKERS: {cpus}" in log
    fp16_lines = [line for line in err.splitlines() if "fp16" in line]
    assert len(fp16_lines) == 1 and fp16_lines[0].startswith(
        "warning: PREC=fp16 needs a CUDA device; running in fp32 on cpu"
    ), fp16_lines
    assert "UserWarning" not in err


# ---- checkpoints, resume, one log ----------------------------------------------------------------
def interrupted_toy_run(toy_root: Path, out: Path, epochs: int, at_epoch: int) -> list[str]:
    """A toy run stopped (Ctrl-C) at the first step of epoch ``at_epoch``; return its arguments."""
    original = ToyLinear.forward_backward

    def forward_backward(self, batch):
        if self.epoch + 1 == at_epoch:
            raise KeyboardInterrupt
        return original(self, batch)

    args = toy_args(toy_root, out, epochs=epochs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ToyLinear, "forward_backward", forward_backward)
        assert run_cli(train_cli.main)(args) == 130
    return args


@pytest.fixture(scope="module")
def killed_toy_run(toy_root, tmp_path_factory) -> tuple[Path, list[str]]:
    """A 4-epoch toy run stopped in epoch 3: the checkpoints of epochs 1 and 2 are on disk."""
    out = tmp_path_factory.mktemp("killed") / "run"
    return out, interrupted_toy_run(toy_root, out, epochs=4, at_epoch=3)


def test_previous_checkpoint_is_kept_and_a_truncated_latest_falls_back_with_a_warning(killed_toy_run, capsys):
    out, args = killed_toy_run
    folder = out / "model"
    assert {p.name for p in folder.glob("model.pth.tar-*")} == {"model.pth.tar-1", "model.pth.tar-2"}
    first = load_checkpoint(str(folder / "model.pth.tar-1"))
    assert 0 < first["wall_time_s"] < 1000
    first["wall_time_s"] = 1000.0  # as if the killed run had taken long: the total must include it
    torch.save(first, folder / "model.pth.tar-1")
    latest = folder / "model.pth.tar-2"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # a copy cut short
    start = time.time()
    rc, stdout, err = train(args, capsys)
    session = time.time() - start
    assert rc == 0, err
    (warning,) = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert f'Cannot read checkpoint "{latest}" (truncated or corrupt?)' in warning
    assert f"resuming from the earlier checkpoint {folder / 'model.pth.tar-1'} instead" in warning
    assert "Previous epoch: 1; resumed at epoch 2 of 4" in stdout
    history = [json.loads(line)["epoch"] for line in (out / "train_history.jsonl").read_text().splitlines()]
    assert history == [1, 2, 3, 4]
    # One log, top to bottom: the killed run, then the resumed one; no log.txt-<time>.
    assert [p.name for p in out.glob("log.txt*")] == ["log.txt"]
    log = (out / "log.txt").read_text()
    killed_part, _, resumed_part = log.partition("another run in this folder")
    assert "epoch [2/4]" in killed_part and "resumed at epoch 2 of 4" in resumed_part
    # The total time counts the killed run too.
    assert 1000 < load_checkpoint(str(folder / "model.pth.tar-4"))["wall_time_s"] < 1000 + session
    assert {p.name for p in folder.glob("model.pth.tar-*")} == {"model.pth.tar-4"}  # the finished run keeps the last


def test_no_readable_checkpoint_is_one_line(toy_root, tmp_path, capsys):
    out = tmp_path / "broken"
    interrupted_toy_run(toy_root, out, epochs=3, at_epoch=2)
    (only,) = (out / "model").glob("model.pth.tar-*")
    only.write_bytes(only.read_bytes()[:100])
    before = snapshot(out / "model")
    rc, _, err = train(toy_args(toy_root, out, epochs=3), capsys)
    assert rc == 2
    one_line_error(err, f'Cannot read checkpoint "{only}"', "no earlier checkpoint", "delete its model folders")
    assert snapshot(out / "model") == before  # the log says a run was tried; checkpoints stay as they were


# ---- Stage I: progress line and history like Stage II --------------------------------------------
def test_stage1_prints_time_and_eta_and_writes_the_train_history(tiny_env, tmp_path, capsys):
    out = tmp_path / "stage1"
    args = tiny_env.args("AnchorOPT_StageI", out, "OPTIM.MAX_EPOCH", "2", "TEST.NO_TEST", "True")
    rc, stdout, err = train(args, capsys)
    assert rc == 0, err
    steps = [line for line in stdout.splitlines() if line.startswith("epoch [")]
    assert steps and all(" time " in line and " eta " in line and " mse " in line for line in steps)
    history = [json.loads(line) for line in (out / "train_history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2] and all(h["mse"] > 0 and h["seconds"] > 0 for h in history)


# ---- the heatmap ---------------------------------------------------------------------------------
def test_heatmap_has_a_colour_bar_outlined_choices_and_a_readable_size(tmp_path):
    matrix = torch.full((5, 5), 0.05)
    chosen = [4, 0, 1, 2, 3]
    for slot, source in enumerate(chosen):
        matrix[slot, source] = 0.8
    image = Image.open(render_position_matrix(matrix, tmp_path / "positions.png", 4, 1)).convert("RGB")
    layout = HeatmapLayout(5)
    assert image.size == layout.size and image.size[0] >= 500
    for slot in range(5):
        for source in range(5):
            x0, y0, _, _ = layout.cell_box(slot, source)
            edge = image.getpixel((x0 + 2, y0 + layout.cell // 2))
            assert (edge == CHOSEN_COLOUR) == (source == chosen[slot]), (slot, source, edge)
    bx0, by0, bx1, by1 = layout.colour_bar()
    for y, colour in ((by0 + 1, HIGH_COLOUR), (by1 - 1, LOW_COLOUR)):  # high values on top
        pixel = image.getpixel(((bx0 + bx1) // 2, y))
        assert max(abs(a - b) for a, b in zip(pixel, colour)) <= 3, (y, pixel)


# ---- help texts ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "parser",
    [
        positions_cli.build_parser,
        descriptions_cli.build_generate_parser,
        descriptions_cli.build_download_parser,
        prepare_data.build_parser,
        results_cli.build_parser,
        train_cli.build_parser,
    ],
)
def test_help_is_plain_text_with_help_for_every_option(parser):
    p: argparse.ArgumentParser = parser()
    text = p.format_help()
    assert "``" not in text and ":func:" not in text and ".. " not in text
    assert p.description and not p.description.startswith("``")
    undocumented = [a.dest for a in p._actions if not a.help and not isinstance(a, argparse._HelpAction)]
    assert undocumented == []


# ---- a traceback never reaches the user ----------------------------------------------------------
def test_warnings_are_one_line_only_under_the_cli(capsys):
    import warnings

    def main(argv):
        warnings.warn("something to know\nsecond line", UserWarning)
        return 0

    assert run_cli(main)([]) == 0
    assert capsys.readouterr().err == "warning: something to know second line\n"
    assert warnings.showwarning.__name__ != "_one_line_warning"  # restored for library callers
