"""The engine end to end through train.py with a toy trainer (no CLIP needed).

Runs on the built-in core; where the real Dassl package is installed the same
tests run on it too (``dassl`` parameter), and skip cleanly otherwise.
"""

import json
import math
import os

import pytest
import torch

from anchoropt.engine.checkpoint import load_checkpoint
from tests.support.engine_runs import dassl_available, run_train, run_train_subprocess
from tests.support.toy_plugin import write_toy_colors

ENGINES = [
    "builtin",
    pytest.param("dassl", marks=pytest.mark.skipif(not dassl_available(), reason="real Dassl not installed")),
]
EPOCHS = 4


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("toydata")
    write_toy_colors(str(root))
    return str(root)


def toy_args(root, out, *flags, opts=()):
    return [
        "--root",
        root,
        "--seed",
        "1",
        "--trainer",
        "ToyLinear",
        "--output-dir",
        str(out),
        "--plugin",
        "tests.support.toy_plugin",
        *flags,
        "DATASET.NAME",
        "ToyColors",
        "INPUT.SIZE",
        "(8, 8)",
        "INPUT.TRANSFORMS",
        "('normalize',)",
        "DATALOADER.NUM_WORKERS",
        "0",
        "DATALOADER.TRAIN_X.BATCH_SIZE",
        "8",
        "DATALOADER.TEST.BATCH_SIZE",
        "5",
        "OPTIM.NAME",
        "sgd",
        "OPTIM.LR",
        "0.05",
        "OPTIM.MAX_EPOCH",
        str(EPOCHS),
        "OPTIM.LR_SCHEDULER",
        "cosine",
        "OPTIM.WARMUP_EPOCH",
        "1",
        "OPTIM.WARMUP_TYPE",
        "constant",
        "OPTIM.WARMUP_CONS_LR",
        "1e-3",
        "TRAIN.PRINT_FREQ",
        "1",
        *opts,
    ]


def read_trace(out):
    with open(os.path.join(out, "lr_trace.jsonl")) as f:
        return [json.loads(line) for line in f]


def read_result(out):
    with open(os.path.join(out, "toy_result.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def trained(toy_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("toy_run")
    assert run_train(toy_args(toy_root, out)) == 0
    return str(out)


def test_training_reduces_loss_and_writes_dassl_checkpoint_names(trained):
    trace = read_trace(trained)
    first = [r["loss"] for r in trace if r["epoch"] == 0]
    last = [r["loss"] for r in trace if r["epoch"] == EPOCHS - 1]
    assert sum(last) / len(last) < sum(first) / len(first)
    folder = os.path.join(trained, "model")
    # Only the last epoch is kept (CHECKPOINT_FREQ 0), as in Dassl; intermediate resume points were removed.
    assert sorted(f for f in os.listdir(folder) if not f.startswith(".")) == ["checkpoint", f"model.pth.tar-{EPOCHS}"]
    with open(os.path.join(folder, "checkpoint")) as f:
        assert f.read().strip() == f"model.pth.tar-{EPOCHS}"
    ckpt = load_checkpoint(os.path.join(folder, f"model.pth.tar-{EPOCHS}"))
    assert ckpt["epoch"] == EPOCHS and set(ckpt["state_dict"]) == {"weight", "bias"}
    assert isinstance(ckpt["scheduler"], dict) and "successor" in ckpt["scheduler"]
    assert os.path.isfile(os.path.join(trained, "log.txt"))
    assert read_result(trained)["accuracy"] > 100 / 4  # above chance on 4 colour classes


def test_train_history_has_one_line_per_epoch(trained):
    with open(os.path.join(trained, "train_history.jsonl")) as f:
        history = [json.loads(line) for line in f]
    trace = read_trace(trained)
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    for h in history:
        steps = [r for r in trace if r["epoch"] == h["epoch"] - 1]
        assert h["steps"] == len(steps) and h["lr"] == steps[0]["lr"]
        assert h["loss"] == pytest.approx(sum(r["loss"] for r in steps) / len(steps))


def test_lr_follows_constant_warmup_then_cosine_stepped_per_epoch(trained):
    trace = read_trace(trained)
    for rec in trace:
        e = rec["epoch"]
        want = 1e-3 if e == 0 else 0.5 * 0.05 * (1 + math.cos(math.pi * (e - 1) / EPOCHS))
        assert rec["lr"] == pytest.approx(want, rel=1e-9), rec
    # 32 training images, batch 8 -> 4 steps per epoch, all at the same LR within an epoch
    assert [sum(1 for r in trace if r["epoch"] == e) for e in range(EPOCHS)] == [4] * EPOCHS


def test_eval_only_reproduces_accuracy(trained, toy_root, tmp_path):
    final = read_result(trained)["accuracy"]
    out = tmp_path / "eval"
    args = toy_args(toy_root, out, "--eval-only", "--model-dir", trained, "--load-epoch", str(EPOCHS))
    assert run_train(args) == 0
    assert read_result(str(out))["accuracy"] == final


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.slow  # end to end through train.py subprocesses or scripts
def test_resume_after_sigkill_matches_uninterrupted_run(engine, toy_root, tmp_path, trained):
    out = tmp_path / f"killed_{engine}"
    args = toy_args(toy_root, out)
    killed = run_train_subprocess(args, engine=engine, TOY_CRASH_AT="3,2")
    assert killed.returncode == -9, killed.stderr[-2000:]
    folder = out / "model"
    assert (folder / "model.pth.tar-2").is_file() and not (folder / "model.pth.tar-3").exists()
    resumed = run_train_subprocess(args, engine=engine)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "will resume training" in resumed.stdout
    reference = trained if engine == "builtin" else None
    if reference is None:
        ref_out = tmp_path / "ref"
        assert run_train_subprocess(toy_args(toy_root, ref_out), engine=engine).returncode == 0
        reference = str(ref_out)
    assert read_result(str(out)) == read_result(reference)
    a = torch.load(folder / f"model.pth.tar-{EPOCHS}", weights_only=True)["state_dict"]
    b = torch.load(os.path.join(reference, "model", f"model.pth.tar-{EPOCHS}"), weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The resumed process started at epoch 3 (index 2): its steps continue the uninterrupted LR trace.
    trace = read_trace(str(out))
    ref_trace = read_trace(reference)
    assert [r["lr"] for r in trace if r["epoch"] >= 2][-8:] == [r["lr"] for r in ref_trace if r["epoch"] >= 2]
