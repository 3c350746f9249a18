"""Reliability end to end through train.py with the tiny CLIP and generated data, on the engine this process
selects (in CI: the built-in one; subprocesses select the same).

1. bad input: one line ``error: ...`` naming the thing at fault, exit code 2, no traceback (``--debug``: one);
2. a non-finite loss stops the run with its epoch and step and advice, the last checkpoint stays intact;
3. a run SIGKILLed mid-epoch resumes when rerun and ends exactly as an uninterrupted run; atomic writes;
4. two runs with the same seed write identical results files apart from the timing keys;
5. checkpoints are only read with ``weights_only=True`` (or the allow-list loader); pickled code is refused;
6. a second job on a busy output directory fails fast and leaves the first job's files alone.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from anchoropt.backbone.precision import non_finite_loss_advice
from anchoropt.cli.errors import run_cli
from anchoropt.cli.train import main
from anchoropt.engine import ENGINE_ENV
from anchoropt.engine.checkpoint import load_checkpoint
from anchoropt.errors import CheckpointError, ConfigError, DataError
from anchoropt.method.anchor_checkpoint import save_anchor
from anchoropt.results.record import TIMING_KEYS
from tests.support.anchoropt_runs import make_tiny_env, read_results, write_descriptions
from tests.support.clip_fixtures import tiny_clip, tiny_clip_dir, tiny_clip_state_dict_file  # noqa: F401
from tests.support.data_layouts import write_dataset
from tests.support.engine_runs import REPO, run_train_subprocess, subprocess_env
from tests.support.reliability_plugin import GO_FILE, KILL_ENV, PAUSE_DIR_ENV, PAUSE_ENV, PAUSED_FILE
from trainers.base import ClipTrainer

PLUGIN = ("--plugin", "tests.support.reliability_plugin")
EPOCHS = 3  # 12 base-class shots, batch 4: 3 steps per epoch
MODEL = "prompt_learner"  # CoOp_AnchorOPT's checkpoint folder
# Subprocesses select the engine as this process did, so results files name the same engine and reason.
ENGINE_HERE = os.environ.get(ENGINE_ENV, "") or "auto"
# Warm-up then cosine (scheduler state with a successor) and random flips (the RNG matters for data too).
STAGE2_OPTS = (
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
    "INPUT.TRANSFORMS",
    "('random_flip', 'normalize')",
    "TRAINER.ANCHOROPT.N_CTX",
    "2",
    "TRAIN.PRINT_FREQ",
    "1",
)


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_clip_state_dict_file):  # noqa: F811
    return make_tiny_env(tmp_path_factory.mktemp("reliability"), tiny_clip_state_dict_file)


def text_width(clip_model) -> int:
    return int(clip_model.token_embedding.weight.shape[1])


def write_anchor(path: Path, length: int, width: int, seed: int = 0) -> Path:
    anchor = 0.02 * torch.randn(length, width, generator=torch.Generator().manual_seed(seed))
    return save_anchor(path, anchor, [], {"note": "written by test_reliability"})


@pytest.fixture(scope="module")
def anchor_file(env, tiny_clip) -> Path:  # noqa: F811
    return write_anchor(env.root / "anchor.pth", 1, text_width(tiny_clip))


def stage2_args(env, anchor: Path, out: Path, *opts: str, flags: tuple[str, ...] = ()) -> list[str]:
    return env.args(
        "CoOp_AnchorOPT",
        out,
        *STAGE2_OPTS,
        "TRAINER.ANCHOROPT.ANCHOR_PATH",
        str(anchor),
        *opts,
        flags=(*PLUGIN, *flags),
    )


def with_root(args: list[str], root: Path) -> list[str]:
    args = list(args)
    args[args.index("--root") + 1] = str(root)
    return args


def cli(args: list[str], capsys) -> tuple[int, str]:
    """train.py's console entry point in this process: (exit code, stderr)."""
    capsys.readouterr()
    code = run_cli(main)(args)
    return code, capsys.readouterr().err


def assert_one_line_error(stderr: str, *parts: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``folder``: (mtime_ns, sha256)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING_KEYS}


def history(out: Path) -> list[dict]:
    """train_history.jsonl without its timing column."""
    lines = (out / "train_history.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def final_state(out: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(str(out / MODEL / f"model.pth.tar-{EPOCHS}"))["state_dict"]


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --------------------------------------------------------------------------- the reference runs


@dataclass
class Runs:
    first: Path  # OUTPUT_DIR of an uninterrupted run
    second: Path  # the same command again, in another process
    out: Path  # the same command SIGKILLed at epoch 2 step 2, then rerun
    killed: subprocess.CompletedProcess
    left_by_kill: list[str]  # checkpoint folder after the kill
    epochs_recorded_at_kill: list[int]
    resumed: subprocess.CompletedProcess


def start_train(args: list[str], cwd: Path, console: str, **env: str) -> subprocess.Popen:
    """train.py in a new process, its output in ``cwd/console`` (a full pipe would stall a concurrent run)."""
    with open(cwd / console, "w") as log:
        return subprocess.Popen(
            [sys.executable, os.path.join(REPO, "train.py"), *args],
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=subprocess_env(ENGINE_HERE, **env),
        )


def finish(proc: subprocess.Popen, console: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Wait for ``proc``; its stdout and stderr (together) are the text of ``console``."""
    proc.wait(timeout=timeout)
    output = console.read_text()
    return subprocess.CompletedProcess(proc.args, proc.returncode, output, output)


@pytest.fixture(scope="module")
def runs(env, anchor_file, tmp_path_factory) -> Runs:
    """CoOp_AnchorOPT (Gumbel sampling, random flips) as separate train.py processes, all with one command whose
    OUTPUT_DIR is the relative path ``run`` (so their results files can be compared whole): twice uninterrupted, once
    SIGKILLed at epoch 2 step 2 and then rerun. Not in this process: its config would hold every config node
    the test session has registered."""
    work = tmp_path_factory.mktemp("runs")
    args = stage2_args(env, anchor_file, Path("run"))
    cwds = {name: work / name for name in ("first", "second", "killed")}
    for cwd in cwds.values():
        cwd.mkdir()
    procs = {
        name: start_train(args, cwd, "console.txt", **({KILL_ENV: "2,2"} if name == "killed" else {}))
        for name, cwd in cwds.items()
    }
    try:
        done = {name: finish(proc, cwds[name] / "console.txt") for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name in ("first", "second"):
        assert done[name].returncode == 0, done[name].stdout[-3000:]
    out = cwds["killed"] / "run"
    left = sorted(os.listdir(out / MODEL))
    recorded = [entry["epoch"] for entry in history(out)]
    resumed = finish(start_train(args, cwds["killed"], "rerun.txt"), cwds["killed"] / "rerun.txt")
    return Runs(cwds["first"] / "run", cwds["second"] / "run", out, done["killed"], left, recorded, resumed)


# --------------------------------------------------------------------------- 1. bad input


def test_missing_data_root_is_one_line_with_exit_code_2_and_a_traceback_only_with_debug(env, anchor_file, tmp_path):
    missing = tmp_path / "no_such_data"
    args = with_root(stage2_args(env, anchor_file, tmp_path / "out"), missing)
    proc = run_train_subprocess(args, engine=ENGINE_HERE)
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, f"DATASET.ROOT {missing} does not exist", "expected the folder that holds")
    # --debug: the exception leaves the entry point, so Python prints its traceback.
    with pytest.raises(DataError, match=re.escape(f"DATASET.ROOT {missing} does not exist")):
        run_cli(main)(["--debug", *args])


def test_empty_data_root(env, anchor_file, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=re.escape(f"DATASET.ROOT {tmp_path / 'empty'} is empty")):
        main(with_root(stage2_args(env, anchor_file, tmp_path / "out"), tmp_path / "empty"))


def test_missing_split_file_is_an_error_unless_the_random_split_is_asked_for(env, anchor_file, tmp_path):
    info = write_dataset("OxfordPets", tmp_path / "data", n_classes=6, n_per_class=10, with_split=False)
    split_file = info.dataset_dir / "split_zhou_OxfordPets.json"
    args = with_root(stage2_args(env, anchor_file, tmp_path / "out", flags=("--no-train",)), info.root)
    with pytest.raises(DataError) as error:
        main(args)
    message = str(error.value)
    assert f"split file not found: {split_file}" in message
    assert f"anchoropt-prepare-data --root {info.root} --datasets OxfordPets --download-splits" in message
    assert "DATASET.RANDOM_SPLIT_IF_MISSING True" in message
    assert not split_file.exists()
    with pytest.warns(UserWarning, match="building a new random split"):
        assert main([*args, "DATASET.RANDOM_SPLIT_IF_MISSING", "True"]) == 0
    assert set(json.loads(split_file.read_text())) == {"train", "val", "test"}  # CoOp's rule, saved


def test_split_listing_missing_images_gives_the_count_and_the_first_few(env, anchor_file, tmp_path):
    info = write_dataset("OxfordPets", tmp_path / "data", n_classes=6, n_per_class=10)
    split = json.loads((info.dataset_dir / "split_zhou_OxfordPets.json").read_text())
    gone = [row[0] for row in split["test"][:7]]
    for name in gone:
        (info.dataset_dir / "images" / name).unlink()
    args = with_root(stage2_args(env, anchor_file, tmp_path / "out", "DATASET.SUBSAMPLE_CLASSES", "all"), info.root)
    with pytest.raises(DataError) as error:
        main(args)
    message = str(error.value)
    shots = env.num_shots
    used = info.num_classes * (shots + min(shots, 4, info.per_class["val"]) + info.per_class["test"])  # few-shot
    assert f"7 of {used} images listed in" in message  # counted over the images this run uses
    assert "split_zhou_OxfordPets.json are missing under" in message
    assert ", ".join(gone[:5]) in message and "(and 2 more)" in message


@pytest.mark.parametrize("workers", [0, 2])
def test_undecodable_image_names_the_file_also_from_dataloader_workers(env, tmp_path, workers, capsys):
    info = write_dataset("OxfordPets", tmp_path / "data", n_classes=6, n_per_class=10)
    split = json.loads((info.dataset_dir / "split_zhou_OxfordPets.json").read_text())
    broken = info.dataset_dir / "images" / split["test"][1][0]
    # A JPEG signature passes the start-up check (it reads headers only); the loader decodes and names the file.
    broken.write_bytes(b"\xff\xd8\xffthis is not a jpeg")
    args = with_root(
        env.args("ZeroshotCLIP", tmp_path / "out", "DATALOADER.NUM_WORKERS", str(workers), subsample="all"), info.root
    )
    code, stderr = cli(args, capsys)
    assert code == 2
    assert_one_line_error(stderr, f"error: Cannot decode image {broken}: UnidentifiedImageError")


@pytest.mark.parametrize("problem", ["missing", "not_json", "lacking_class"])
def test_descriptions_file_problems_name_the_file(env, tmp_path, problem):
    path = tmp_path / "descriptions.json"
    if problem == "not_json":
        path.write_text("{'not': json")
    elif problem == "lacking_class":
        write_descriptions(path, env.base_classes[1:])
    args = env.args(
        "AnchorOPT_StageI", tmp_path / "out", "OPTIM.MAX_EPOCH", "1", "TRAINER.ANCHOROPT.DESCRIPTIONS", str(path)
    )
    expected = {
        "missing": f"description file not found: {path}",
        "not_json": f"description file {path} is not valid JSON",
        "lacking_class": f"description file {path} has no entry for 1 of 3 classes: '{env.base_classes[0]}'",
    }
    with pytest.raises(DataError) as error:
        main(args)
    assert expected[problem] in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("problem", ["missing", "width", "length"])
def test_anchor_checkpoint_problems_name_the_file_and_the_shapes(env, tiny_clip, tmp_path, problem):  # noqa: F811
    width = text_width(tiny_clip)
    path = tmp_path / "anchor.pth"
    if problem == "width":
        write_anchor(path, 1, width + 8)
    elif problem == "length":
        write_anchor(path, 2, width)
    expected = {
        "missing": f"anchor checkpoint not found: {path}",
        "width": f"anchor in {path} has shape [1, {width + 8}], expected [1, {width}]",
        "length": f"anchor in {path} has shape [2, {width}], expected [1, {width}]",
    }
    with pytest.raises(CheckpointError, match=re.escape(expected[problem])):
        main(stage2_args(env, path, tmp_path / "out"))


def test_model_dir_without_checkpoint(env, anchor_file, tmp_path):
    (tmp_path / "empty_model_dir").mkdir()
    args = stage2_args(
        env, anchor_file, tmp_path / "out", flags=("--eval-only", "--model-dir", str(tmp_path / "empty_model_dir"))
    )
    where = re.escape(str(tmp_path / "empty_model_dir" / MODEL))
    with pytest.raises(CheckpointError, match=f"No checkpoint at {where}.*output directory of a training run"):
        main(args)


@pytest.mark.slow  # end to end through train.py subprocesses or scripts
def test_model_dir_trained_with_another_n_ctx(env, anchor_file, runs, tmp_path):
    args = stage2_args(
        env,
        anchor_file,
        tmp_path / "out",
        "TRAINER.ANCHOROPT.N_CTX",
        "4",
        flags=("--eval-only", "--model-dir", str(runs.first), "--load-epoch", str(EPOCHS)),
    )
    with pytest.raises(CheckpointError) as error:
        main(args)
    message = str(error.value)
    assert str(runs.first / MODEL / f"model.pth.tar-{EPOCHS}") in message and "N_CTX" in message
    assert "shape mismatch ctx: checkpoint (2, " in message and "vs model (4, " in message


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            ("--trainer", "CoOp_AnchorOPTT"),
            r"Unknown trainer 'CoOp_AnchorOPTT' \(--trainer\); did you mean 'CoOp_AnchorOPT'\? "
            r"registered: .*CoOp_AnchorOPT,",
        ),
        (("DATASET.NAME", "OxfordPetz"), r"Unknown dataset 'OxfordPetz'.*registered: .*OxfordPets"),
        (("TRAINER.ANCHOROPT.N_CTXX", "4"), r"TRAINER.ANCHOROPT.N_CTXX.*unknown config key"),
    ],
)
def test_unknown_trainer_dataset_or_config_key(env, anchor_file, tmp_path, change, expected):
    args = stage2_args(env, anchor_file, tmp_path / "out")
    if change[0] == "--trainer":
        args[args.index("--trainer") + 1] = change[1]
    else:
        args += list(change)
    with pytest.raises(ConfigError, match=expected):
        main(args)


def test_input_size_not_matching_the_backbone(env, anchor_file, tmp_path):
    with pytest.raises(ConfigError, match=r"INPUT.SIZE=\(224, 224\) does not match .* expects \(32, 32\)"):
        main(stage2_args(env, anchor_file, tmp_path / "out", "INPUT.SIZE", "(224, 224)"))


# --------------------------------------------------------------------------- 2. non-finite loss


def test_non_finite_loss_stops_with_epoch_step_and_advice_and_the_checkpoint_stays_intact(
    env, anchor_file, runs, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "nan"
    args = stage2_args(env, anchor_file, out)
    optimize = ClipTrainer.optimize
    at_failure: dict = {}

    def nan_at_epoch_2_step_2(self, loss, names=None):
        if (self.epoch + 1, self.batch_idx + 1) == (2, 2):
            at_failure.update(snapshot(out / MODEL))
            loss = loss * float("nan")
        return optimize(self, loss, names)

    monkeypatch.setattr(ClipTrainer, "optimize", nan_at_epoch_2_step_2)
    code, stderr = cli(args, capsys)
    assert code == 2
    assert_one_line_error(
        stderr,
        "Loss is nan at epoch 2, batch 2 of 3",
        f"checkpoint of epoch 1 in {out} is intact",
        "TRAINER.COOP.PREC is already fp32",
        "OPTIM.LR",
    )
    assert snapshot(out / MODEL) == at_failure  # nothing written, replaced or removed after the NaN
    assert sorted(at_failure) == ["checkpoint", "model.pth.tar-1"]
    checkpoint = load_checkpoint(str(out / MODEL / "model.pth.tar-1"))
    assert checkpoint["epoch"] == 1 and all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())
    assert not (out / "results.json").exists()

    # The same command once the cause is gone resumes from that checkpoint and ends as the run that never
    # failed; an epoch recorded but not checkpointed, and a torn line, are dropped from the history.
    monkeypatch.setattr(ClipTrainer, "optimize", optimize)
    with open(out / "train_history.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "steps": 3, "loss": 0.0}) + "\n" + '{"epoch": 3, "lo')
    assert main(args) == 0
    assert history(out) == history(runs.first)
    assert read_results(out)["metrics"] == read_results(runs.first)["metrics"]
    assert_same_tensors(final_state(out), final_state(runs.first))


@pytest.mark.parametrize(
    "prec, advice",
    [
        (
            "fp16",
            "TRAINER.COOP.PREC is fp16, whose narrow range is the usual cause: rerun with TRAINER.COOP.PREC fp32 "
            "(or amp)",
        ),
        ("amp", "TRAINER.COOP.PREC is amp: rerun with TRAINER.COOP.PREC fp32"),
        ("fp32", "TRAINER.COOP.PREC is already fp32"),
    ],
)
def test_non_finite_loss_advice_follows_the_precision_in_effect(prec, advice):
    assert non_finite_loss_advice("TRAINER.COOP.PREC", prec).startswith(advice)


# --------------------------------------------------------------------------- 3. interrupted runs


@pytest.mark.slow  # end to end through train.py subprocesses or scripts
def test_sigkill_mid_epoch_then_the_same_command_resumes_and_ends_like_an_uninterrupted_run(runs):
    assert runs.killed.returncode == -signal.SIGKILL, runs.killed.stderr[-2000:]
    assert runs.epochs_recorded_at_kill == [1]  # killed inside epoch 2
    killed_log = (runs.out / "log.txt").read_text().split("another run in this folder")[0]  # the resume appends
    assert killed_log.rstrip().splitlines()[-2].startswith("epoch [2/3] batch [1/3]")
    assert runs.left_by_kill == ["checkpoint", "model.pth.tar-1"]  # the resume point of epoch 1, nothing half-written
    assert runs.resumed.returncode == 0, runs.resumed.stderr[-2000:]
    assert "will resume training" in runs.resumed.stdout and "Previous epoch: 1" in runs.resumed.stdout
    resumed, uninterrupted = read_results(runs.out), read_results(runs.first)
    assert resumed["metrics"]["accuracy"] == uninterrupted["metrics"]["accuracy"]
    assert without_timing(resumed) == without_timing(uninterrupted)  # the whole results file, provenance included
    assert_same_tensors(final_state(runs.out), final_state(runs.first))
    assert history(runs.out) == history(runs.first)
    assert (runs.out / "positions.txt").read_text() == (runs.first / "positions.txt").read_text()


@pytest.mark.slow  # end to end through train.py subprocesses or scripts
def test_results_and_checkpoint_writes_are_atomic(env, anchor_file, runs, tmp_path, monkeypatch):
    out = tmp_path / "copy"
    shutil.copytree(runs.first, out)
    args = stage2_args(env, anchor_file, out)
    from tests.support.anchoropt_runs import build_trainer_from_args

    trainer = build_trainer_from_args(args)
    before = snapshot(out)

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        trainer.write_results("test", {"accuracy": 0.0}, num_samples=1)
    with pytest.raises(CheckpointError, match="No space left on device; the earlier checkpoints in .* are intact"):
        trainer.save_model(EPOCHS - 1, str(out))  # would replace model.pth.tar-3 and the pointer
    monkeypatch.undo()
    assert snapshot(out) == before  # old files intact, no temporary files left behind
    assert read_results(out) == read_results(runs.first)


# --------------------------------------------------------------------------- 4. determinism


@pytest.mark.slow  # end to end through train.py subprocesses or scripts
def test_two_runs_with_the_same_seed_write_identical_results_apart_from_timing(runs):
    first, second = read_results(runs.first), read_results(runs.second)
    assert set(TIMING_KEYS) <= set(first)
    assert without_timing(first) == without_timing(second)
    assert_same_tensors(final_state(runs.first), final_state(runs.second))
    assert history(runs.first) == history(runs.second)


# --------------------------------------------------------------------------- 5. safe loading

# torch.load calls allowed without weights_only=True: the restricted-unpickler loader of Dassl-format files.
UNPICKLING_ALLOWED = {("anchoropt/method/official_checkpoint.py", "load_official_checkpoint")}
# torch.jit.load reads OpenAI's released CLIP weights (TorchScript archives), which have no other format.
JIT_LOAD_ALLOWED = {("anchoropt/backbone/loading.py", "read_clip_state_dict")}


def project_sources() -> list[Path]:
    skip = {"tests", "build", "dist", "venv", "node_modules"}
    return sorted(
        p
        for p in Path(REPO).rglob("*.py")
        if not any(part in skip or part.startswith(".") for part in p.relative_to(REPO).parts)
    )


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


def loading_calls(path: Path):
    """(enclosing function, dotted callee, call node) for every call that deserialises a file."""
    tree = ast.parse(path.read_text(), str(path))
    aliases = {}
    for node in ast.walk(tree):  # `from torch import load` / `import pickle as pk`
        if isinstance(node, ast.ImportFrom) and node.module in ("torch", "pickle", "torch.jit"):
            aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
        elif isinstance(node, ast.Import):
            aliases.update({a.asname: a.name for a in node.names if a.asname})
    found = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            if isinstance(child, ast.Call):
                name = dotted(child.func)
                head, _, rest = name.partition(".")
                name = f"{aliases[head]}.{rest}".rstrip(".") if head in aliases else name
                if name in ("torch.load", "torch.jit.load", "pickle.load", "pickle.loads", "pickle.Unpickler"):
                    found.append((function, name, child))
            visit(child, inner)

    visit(tree, "")
    return found


def test_every_torch_load_uses_weights_only_or_the_allow_listed_loader():
    sources = project_sources()
    assert {Path(REPO, "anchoropt", "engine", "checkpoint.py"), Path(REPO, "trainers", "base.py")} <= set(sources)
    offenders, seen = [], set()
    for path in sources:
        rel = str(path.relative_to(REPO))
        for function, name, call in loading_calls(path):
            seen.add((rel, function, name))
            weights_only = next((k.value for k in call.keywords if k.arg == "weights_only"), None)
            safe = isinstance(weights_only, ast.Constant) and weights_only.value is True
            if name == "torch.load" and not safe and (rel, function) not in UNPICKLING_ALLOWED:
                offenders.append(f"{rel}:{call.lineno} {function}: torch.load without weights_only=True")
            if name == "torch.jit.load" and (rel, function) not in JIT_LOAD_ALLOWED:
                offenders.append(f"{rel}:{call.lineno} {function}: torch.jit.load outside the CLIP weights loader")
            if name.startswith("pickle.") and (rel, function) not in UNPICKLING_ALLOWED:
                offenders.append(f"{rel}:{call.lineno} {function}: {name} outside the restricted loader")
    assert not offenders, "\n".join(offenders)
    # The scan sees the real loaders (so it would see a new one), and the allowed one is restricted.
    assert ("anchoropt/engine/checkpoint.py", "load_checkpoint", "torch.load") in seen
    (legacy,) = [
        c for f, n, c in loading_calls(Path(REPO, "anchoropt/method/official_checkpoint.py")) if n == "torch.load"
    ]
    assert any(k.arg == "pickle_module" for k in legacy.keywords)


class _Payload:
    """Unpickling this calls open(marker, "w"): a file appears if the payload ever runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.slow  # end to end through train.py subprocesses or scripts
def test_checkpoint_with_a_pickle_payload_is_refused_and_never_runs(env, anchor_file, runs, tmp_path, capsys):
    model_dir = tmp_path / "model_dir"
    marker = tmp_path / "payload_ran"
    good = load_checkpoint(str(runs.first / MODEL / f"model.pth.tar-{EPOCHS}"))
    (model_dir / MODEL).mkdir(parents=True)
    poisoned = model_dir / MODEL / f"model.pth.tar-{EPOCHS}"
    torch.save({**good, "scheduler": _Payload(marker)}, poisoned)  # Dassl-style: an object next to the weights
    (model_dir / MODEL / "checkpoint").write_text(poisoned.name + "\n")
    args = stage2_args(
        env,
        anchor_file,
        tmp_path / "out",
        flags=("--eval-only", "--model-dir", str(model_dir), "--load-epoch", str(EPOCHS)),
    )
    code, stderr = cli(args, capsys)
    assert code == 2
    assert_one_line_error(stderr, f'Refusing to load "{poisoned}"', "pickled Python objects", "nothing in it was run")
    assert not marker.exists()
    # Resuming into a directory holding such a file is refused the same way.
    with pytest.raises(CheckpointError, match="Refusing to load"):
        main(stage2_args(env, anchor_file, model_dir))
    assert not marker.exists()


# --------------------------------------------------------------------------- 6. concurrency


@pytest.mark.slow  # end to end through train.py subprocesses or scripts
def test_a_second_job_on_the_same_output_dir_fails_fast_and_leaves_the_first_alone(env, anchor_file, tmp_path):
    out = tmp_path / "shared_out"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    args = stage2_args(env, anchor_file, out, "OPTIM.MAX_EPOCH", "1")
    first = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "train.py"), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(ENGINE_HERE, **{PAUSE_ENV: "1,2", PAUSE_DIR_ENV: str(barrier)}),
    )
    try:
        deadline = time.monotonic() + 120
        while not (barrier / PAUSED_FILE).exists():  # the first job is mid-epoch, holding the lock
            assert first.poll() is None, first.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the first job never reached its pause"
            time.sleep(0.05)
        before = snapshot(out)
        assert "log.txt" in before and f"{MODEL}/checkpoint" not in before
        second = run_train_subprocess(args, engine=ENGINE_HERE, timeout=120)
        assert second.returncode == 2
        assert_one_line_error(
            second.stderr, f"Another job (pid {first.pid} on ", f"is writing to {out}", "choose another --output-dir"
        )
        assert snapshot(out) == before  # no log, checkpoint or results file of the second job, nothing changed
        (barrier / GO_FILE).touch()
        _, first_err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, first_err[-2000:]
    assert read_results(out)["metrics"]["accuracy"] >= 0
    assert (out / "log.txt").read_text().count("** Config **") == 1  # one job's log only
