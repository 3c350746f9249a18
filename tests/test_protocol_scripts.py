"""The protocol scripts (scripts/base2new, cross_dataset, domain_generalization).

Command composition is checked with DRY_RUN=1 on a copy of the scripts beside
hand-made config files; the end-to-end tests run the real scripts with a tiny
random CLIP on generated datasets, then ``anchoropt-results`` on their output.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from anchoropt.cli.results import main as results_main
from tests.support.anchoropt_runs import write_descriptions
from tests.support.clip_fixtures import tiny_clip, tiny_clip_dir, tiny_clip_state_dict_file  # noqa: F401
from tests.support.data_layouts import write_dataset
from tests.support.engine_runs import REPO, subprocess_env

SCRIPTS = Path(REPO) / "scripts"


def run_script(
    script: str, *args: str, repo: Path | str = REPO, cwd: Path | str | None = None, **env: str
) -> subprocess.CompletedProcess:
    full_env = subprocess_env(PYTHON=sys.executable, **env)
    for key in (
        "DATA",
        "OUTPUT",
        "TRAINER",
        "CFG",
        "SHOTS",
        "STAGE1_CFG",
        "STAGE1_OPTS",
        "DRY_RUN",
        "DATASETS",
        "SEEDS",
    ):
        if key not in env:
            full_env.pop(key, None)
    return subprocess.run(
        ["bash", str(Path(repo) / "scripts" / script), *args],
        cwd=str(cwd or repo),
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )


# ---- DRY_RUN: the commands the scripts compose ---------------------------------------------------
class Command:
    """One printed ``train.py`` call: its flags and its trailing KEY VALUE options (in order)."""

    def __init__(self, line: str) -> None:
        words = shlex.split(line[2:])
        self.python, rest = words[0], words[2:]
        self.flags: dict[str, list[str]] = {}
        i = 0
        while i < len(rest) and rest[i].startswith("--"):
            if rest[i] == "--eval-only":
                self.flags.setdefault(rest[i], []).append("")
                i += 1
            else:
                self.flags.setdefault(rest[i], []).append(rest[i + 1])
                i += 2
        self.opts = list(zip(rest[i::2], rest[i + 1 :: 2]))

    def flag(self, name: str) -> str | None:
        return self.flags.get(name, [None])[-1]

    def opt(self, key: str) -> str | None:
        values = [v for k, v in self.opts if k == key]
        return values[-1] if values else None

    def configs(self, repo: Path) -> list[str]:
        return [str(Path(p).relative_to(repo / "configs" / "trainers")) for p in self.flags.get("--config-file", [])]


def commands(proc: subprocess.CompletedProcess) -> list[Command]:
    assert proc.returncode == 0, proc.stderr
    return [Command(line) for line in proc.stdout.splitlines() if line.startswith("+ ")]


@pytest.fixture
def fake_repo(tmp_path) -> Path:
    """A copy of scripts/ beside config files of a few trainers (nothing else is needed for DRY_RUN)."""
    repo = tmp_path / "repo"
    shutil.copytree(SCRIPTS, repo / "scripts")
    files = [
        "datasets/oxford_pets.yaml",
        "datasets/imagenet.yaml",
        "datasets/imagenetv2.yaml",
        "trainers/CoOp/vit_b16.yaml",
        "trainers/ZeroshotCLIP/vit_b16.yaml",
        "trainers/CoOp_AnchorOPT/vit_b16.yaml",
        "trainers/CoOp_AnchorOPT/base2new/oxford_pets.yaml",
        "trainers/CoOp_AnchorOPT/cross_dataset.yaml",
        "trainers/AnchorOPT_StageI/vit_b16.yaml",
        "trainers/AnchorOPT_StageI/released.yaml",
        "trainers/AnchorOPT_StageI/mse_only.yaml",
        "trainers/AnchorOPT_StageI/cross_dataset.yaml",
    ]  # no Stage I per-dataset file: it must be left out
    for rel in files:
        (repo / "configs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / "configs" / rel).write_text("{}\n")
    (tmp_path / "data").mkdir()
    return repo


def dry(fake_repo: Path, script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    env = {"DATA": str(fake_repo.parent / "data"), "OUTPUT": str(fake_repo.parent / "out"), "DRY_RUN": "1", **env}
    return run_script(script, *args, repo=fake_repo, **env)


def finish(run_dir: Path, max_epoch: int = 7, final_model: str = "last_step") -> Path:
    """A results.json as a finished training run leaves it (the scripts read its config)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = f"OPTIM:\n  MAX_EPOCH: {max_epoch}\nTEST:\n  FINAL_MODEL: {final_model}\n"
    (run_dir / "results.json").write_text(
        json.dumps({"metrics": {"accuracy": 50.0}, "trainer": "T", "dataset": "D", "seed": 1, "config": config})
    )
    return run_dir / "results.json"


def test_anchoropt_train_runs_stage1_then_stage2_with_split_options(fake_repo):
    out = fake_repo.parent / "out"
    stage1, stage2 = commands(
        dry(
            fake_repo,
            "base2new/train.sh",
            "oxford_pets",
            "1",
            "MODEL.BACKBONE.PATH",
            "w.pt",
            "OPTIM.MAX_EPOCH",
            "2",
            "TRAINER.ANCHOROPT.N_CTX",
            "8",
            STAGE1_OPTS="OPTIM.MAX_EPOCH 1 OPTIM.LR 0.5",
        )
    )
    anchor_dir = out / "base2new/train_base/oxford_pets/shots_16/AnchorOPT_StageI/released/seed1"
    assert stage1.flag("--trainer") == "AnchorOPT_StageI" and stage1.flag("--output-dir") == str(anchor_dir)
    # its per-dataset file does not exist here; the recipe (released by default) comes last
    assert stage1.configs(fake_repo) == ["AnchorOPT_StageI/vit_b16.yaml", "AnchorOPT_StageI/released.yaml"]
    assert stage1.opt("MODEL.BACKBONE.PATH") == "w.pt" and stage1.opt("TRAINER.ANCHOROPT.N_CTX") == "8"
    assert [v for k, v in stage1.opts if k == "OPTIM.MAX_EPOCH"] == ["1"]  # Stage II's epochs never reach Stage I
    assert stage1.opt("OPTIM.LR") == "0.5"
    assert stage1.opts[-2:] == [("DATASET.SUBSAMPLE_CLASSES", "base"), ("RUN.PROTOCOL", "base2new")]

    assert stage2.flag("--trainer") == "CoOp_AnchorOPT" and stage2.flag("--seed") == "1"
    stage2_dir = out / "base2new/train_base/oxford_pets/shots_16/CoOp_AnchorOPT/vit_b16/seed1"
    assert stage2.flag("--output-dir") == str(stage2_dir)
    assert stage2.configs(fake_repo) == ["CoOp_AnchorOPT/vit_b16.yaml", "CoOp_AnchorOPT/base2new/oxford_pets.yaml"]
    assert stage2.opt("TRAINER.ANCHOROPT.ANCHOR_PATH") == str(anchor_dir)
    assert stage2.opt("OPTIM.MAX_EPOCH") == "2" and stage2.opt("DATASET.NUM_SHOTS") == "16"
    assert stage2.opts[-2:] == [("DATASET.SUBSAMPLE_CLASSES", "base"), ("RUN.PROTOCOL", "base2new")]
    assert stage2.python == sys.executable and "--eval-only" not in stage2.flags


def test_stage1_recipe_is_chosen_by_name_and_layered_last(fake_repo):
    out = fake_repo.parent / "out"
    stage1, _ = commands(dry(fake_repo, "cross_dataset/train.sh", "1", STAGE1_CFG="mse_only"))
    assert stage1.configs(fake_repo) == [
        "AnchorOPT_StageI/vit_b16.yaml",
        "AnchorOPT_StageI/cross_dataset.yaml",
        "AnchorOPT_StageI/mse_only.yaml",
    ]
    assert stage1.flag("--output-dir") == str(
        out / "cross_dataset/train/imagenet/shots_16/AnchorOPT_StageI/mse_only/seed1"
    )
    proc = dry(fake_repo, "base2new/train.sh", "oxford_pets", "1", STAGE1_CFG="mse_olny")
    assert proc.returncode != 0 and "no Stage I recipe" in proc.stderr and "released or mse_only" in proc.stderr


def test_existing_or_given_anchor_skips_stage1(fake_repo):
    anchor_dir = fake_repo.parent / "out/base2new/train_base/oxford_pets/shots_16/AnchorOPT_StageI/released/seed1"
    anchor_dir.mkdir(parents=True)
    (anchor_dir / "anchor.pth").write_bytes(b"")
    (only,) = commands(dry(fake_repo, "base2new/train.sh", "oxford_pets", "1"))
    assert only.flag("--trainer") == "CoOp_AnchorOPT" and only.opt("TRAINER.ANCHOROPT.ANCHOR_PATH") == str(anchor_dir)
    (only,) = commands(dry(fake_repo, "base2new/train.sh", "oxford_pets", "2", "TRAINER.ANCHOROPT.ANCHOR_PATH", "/rel"))
    assert only.flag("--trainer") == "CoOp_AnchorOPT" and only.opt("TRAINER.ANCHOROPT.ANCHOR_PATH") == "/rel"


def test_cross_dataset_train_uses_imagenet_all_classes_and_protocol_layers(fake_repo):
    out = fake_repo.parent / "out"
    stage1, stage2 = commands(dry(fake_repo, "cross_dataset/train.sh", "3"))
    for cmd in (stage1, stage2):
        assert cmd.flag("--dataset-config-file") == str(fake_repo / "configs/datasets/imagenet.yaml")
        assert cmd.opts[-2:] == [("DATASET.SUBSAMPLE_CLASSES", "all"), ("RUN.PROTOCOL", "cross_dataset")]
    assert stage1.configs(fake_repo) == [
        "AnchorOPT_StageI/vit_b16.yaml",
        "AnchorOPT_StageI/cross_dataset.yaml",
        "AnchorOPT_StageI/released.yaml",
    ]
    assert stage2.configs(fake_repo) == ["CoOp_AnchorOPT/vit_b16.yaml", "CoOp_AnchorOPT/cross_dataset.yaml"]
    anchor_dir = out / "cross_dataset/train/imagenet/shots_16/AnchorOPT_StageI/released/seed3"
    assert stage1.flag("--output-dir") == str(anchor_dir)
    assert stage2.opt("TRAINER.ANCHOROPT.ANCHOR_PATH") == stage1.flag("--output-dir")


def test_test_sh_loads_the_epoch_the_training_run_tested(fake_repo):
    out = fake_repo.parent / "out"
    train_dir = out / "base2new/train_base/oxford_pets/shots_16/CoOp/vit_b16/seed1"
    finish(train_dir, max_epoch=7)
    (cmd,) = commands(dry(fake_repo, "base2new/test.sh", "oxford_pets", "1", "N.K", "v", TRAINER="CoOp"))
    assert cmd.flag("--model-dir") == str(train_dir) and cmd.flag("--load-epoch") == "7"
    assert "--eval-only" in cmd.flags and cmd.opt("N.K") == "v"
    assert cmd.flag("--output-dir") == str(out / "base2new/test_new/oxford_pets/shots_16/CoOp/vit_b16/seed1")
    assert cmd.opts[-2:] == [("DATASET.SUBSAMPLE_CLASSES", "new"), ("RUN.PROTOCOL", "base2new")]
    finish(train_dir, final_model="best_val")
    (cmd,) = commands(dry(fake_repo, "base2new/test.sh", "oxford_pets", "1", TRAINER="CoOp"))
    assert cmd.flag("--model-dir") == str(train_dir) and "--load-epoch" not in cmd.flags  # model-best


def test_test_sh_also_evaluates_the_stage1_anchor_alone(fake_repo):
    out = fake_repo.parent / "out"
    finish(out / "base2new/train_base/oxford_pets/shots_16/CoOp_AnchorOPT/vit_b16/seed1", max_epoch=4)
    stage1_dir = out / "base2new/train_base/oxford_pets/shots_16/AnchorOPT_StageI/released/seed1"
    finish(stage1_dir, max_epoch=9)
    stage2, stage1 = commands(dry(fake_repo, "base2new/test.sh", "oxford_pets", "1", "OPTIM.LR", "1"))
    assert (stage2.flag("--trainer"), stage2.flag("--load-epoch")) == ("CoOp_AnchorOPT", "4")
    assert stage2.opt("TRAINER.ANCHOROPT.ANCHOR_PATH") is None  # the checkpoint carries its anchor
    assert (stage1.flag("--trainer"), stage1.flag("--model-dir"), stage1.flag("--load-epoch")) == (
        "AnchorOPT_StageI",
        str(stage1_dir),
        "9",
    )
    assert stage1.opt("OPTIM.LR") is None
    assert stage1.configs(fake_repo) == ["AnchorOPT_StageI/vit_b16.yaml", "AnchorOPT_StageI/released.yaml"]
    stage1_eval_dir = out / "base2new/test_new/oxford_pets/shots_16/AnchorOPT_StageI/released/seed1"
    assert stage1.flag("--output-dir") == str(stage1_eval_dir)


def test_evaluation_is_redone_only_when_older_than_the_model(fake_repo):
    out = fake_repo.parent / "out"
    train_results = finish(out / "base2new/train_base/oxford_pets/shots_16/CoOp/vit_b16/seed1")
    eval_results = finish(out / "base2new/test_new/oxford_pets/shots_16/CoOp/vit_b16/seed1")
    os.utime(train_results, (1_000_000, 1_000_000))
    proc = dry(fake_repo, "base2new/test.sh", "oxford_pets", "1", TRAINER="CoOp")
    assert commands(proc) == [] and "already evaluated" in proc.stdout
    os.utime(eval_results, (500_000, 500_000))  # the model was retrained after this evaluation
    assert len(commands(dry(fake_repo, "base2new/test.sh", "oxford_pets", "1", TRAINER="CoOp"))) == 1


def test_transfer_evaluations_use_the_imagenet_model(fake_repo):
    out = fake_repo.parent / "out"
    train_dir = finish(out / "cross_dataset/train/imagenet/shots_16/CoOp_AnchorOPT/vit_b16/seed2", max_epoch=3).parent
    (xd,) = commands(dry(fake_repo, "cross_dataset/test.sh", "oxford_pets", "2"))
    (dg,) = commands(dry(fake_repo, "domain_generalization/test.sh", "imagenetv2", "2"))
    for cmd, dataset, protocol in ((xd, "oxford_pets", "cross_dataset"), (dg, "imagenetv2", "domain_generalization")):
        assert cmd.flag("--model-dir") == str(train_dir) and cmd.flag("--load-epoch") == "3"
        assert cmd.flag("--dataset-config-file") == str(fake_repo / f"configs/datasets/{dataset}.yaml")
        assert cmd.configs(fake_repo) == ["CoOp_AnchorOPT/vit_b16.yaml", "CoOp_AnchorOPT/cross_dataset.yaml"]
        assert cmd.flag("--output-dir") == str(out / f"{protocol}/test/{dataset}/shots_16/CoOp_AnchorOPT/vit_b16/seed2")
        assert cmd.opts[-2:] == [("DATASET.SUBSAMPLE_CLASSES", "all"), ("RUN.PROTOCOL", protocol)]


def test_zero_shot_clip_evaluates_without_training(fake_repo):
    (base,) = commands(dry(fake_repo, "base2new/train.sh", "oxford_pets", "1", TRAINER="ZeroshotCLIP"))
    (new,) = commands(dry(fake_repo, "base2new/test.sh", "oxford_pets", "1", TRAINER="ZeroshotCLIP"))
    for cmd, subsample in ((base, "base"), (new, "new")):
        assert "--eval-only" in cmd.flags and "--model-dir" not in cmd.flags
        assert cmd.configs(fake_repo) == ["ZeroshotCLIP/vit_b16.yaml"]
        assert cmd.opt("DATASET.SUBSAMPLE_CLASSES") == subsample


def test_unfinished_run_is_resumed_in_place(fake_repo):
    train_dir = fake_repo.parent / "out/base2new/train_base/oxford_pets/shots_16/CoOp/vit_b16/seed1"
    (train_dir / "prompt_learner").mkdir(parents=True)
    (train_dir / "prompt_learner" / "checkpoint").write_text("model.pth.tar-3\n")
    proc = dry(fake_repo, "base2new/train.sh", "oxford_pets", "1", TRAINER="CoOp")
    (cmd,) = commands(proc)
    assert f"resuming the unfinished run in {train_dir}" in proc.stdout
    assert cmd.flag("--output-dir") == str(train_dir) and "--eval-only" not in cmd.flags  # train.py resumes there


def test_run_all_trains_then_tests_every_dataset_and_seed(fake_repo):
    for folder in ("oxford_pets", "imagenet"):
        (fake_repo.parent / "data" / folder).mkdir()
    cmds = commands(
        dry(
            fake_repo,
            "base2new/run_all.sh",
            "OPTIM.MAX_EPOCH",
            "3",
            TRAINER="CoOp",
            DATASETS="oxford_pets imagenet",
            SEEDS="1 2",
        )
    )
    done = [(Path(c.flag("--dataset-config-file")).stem, c.flag("--seed"), "--eval-only" in c.flags) for c in cmds]
    assert done == [
        (d, s, evaluates) for d in ("oxford_pets", "imagenet") for s in ("1", "2") for evaluates in (False, True)
    ]
    assert all(c.opt("OPTIM.MAX_EPOCH") == "3" for c in cmds)


def test_run_all_runs_the_datasets_present_and_lists_the_skipped_ones(fake_repo):
    data = fake_repo.parent / "data"
    (data / "oxford_pets").mkdir()
    proc = dry(fake_repo, "base2new/run_all.sh", TRAINER="CoOp", DATASETS="eurosat oxford_pets dtd", SEEDS="1")
    assert [Path(c.flag("--dataset-config-file")).stem for c in commands(proc)] == ["oxford_pets", "oxford_pets"]
    skipped = [line for line in proc.stdout.splitlines() if " skipped " in line]
    assert skipped == [
        f"[base2new/run_all.sh] skipped {name}: no folder {data / name} (see CoOp's DATASETS.md, or "
        "anchoropt-prepare-data)"
        for name in ("eurosat", "dtd")
    ]
    none = dry(fake_repo, "base2new/run_all.sh", TRAINER="CoOp", DATASETS="eurosat dtd", SEEDS="1")
    assert none.returncode == 2 and none.stdout == "" and len(none.stderr.splitlines()) == 1
    assert none.stderr.startswith("error: none of the datasets (eurosat dtd) is under DATA=")


def test_trainer_typo_lists_the_valid_trainers_and_the_closest_before_anything_runs(fake_repo):
    for trainer, guess in (("CoOP", "CoOp"), ("CoOp_AnchorOTP", "CoOp_AnchorOPT"), ("Nonsense", "")):
        proc = dry(fake_repo, "base2new/train.sh", "oxford_pets", "1", TRAINER=trainer)
        assert proc.returncode == 2 and proc.stdout == ""  # not even Stage I ran
        (line,) = proc.stderr.splitlines()
        assert line.startswith(f"error: unknown TRAINER '{trainer}' (no folder configs/trainers/{trainer}); ")
        assert line.endswith("valid trainers: AnchorOPT_StageI CoOp CoOp_AnchorOPT ZeroshotCLIP")
        assert (f"did you mean {guess}? " in line) == bool(guess)


def test_test_sh_hint_repeats_the_trainer_and_the_options(fake_repo):
    out = fake_repo.parent / "out"
    proc = run_script(
        "base2new/test.sh",
        *("oxford_pets", "1", "OPTIM.MAX_EPOCH", "3", "TRAINER.COOP.N_CTX", "4"),
        repo=fake_repo,
        DATA=".",
        OUTPUT=str(out),
        TRAINER="CoOp",
        CFG="vit_b16",
        SHOTS="4",
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.endswith(
        f"run first: TRAINER=CoOp CFG=vit_b16 SHOTS=4 OUTPUT={out} bash scripts/base2new/train.sh oxford_pets 1 "
        "OPTIM.MAX_EPOCH 3 TRAINER.COOP.N_CTX 4"
    )


def test_shots_paths_cwd_and_default_output(fake_repo, tmp_path):
    (cmd,) = commands(dry(fake_repo, "base2new/train.sh", "oxford_pets", "1", "DATASET.NUM_SHOTS", "4", TRAINER="CoOp"))
    assert "/shots_4/" in cmd.flag("--output-dir")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_script(
        "base2new/train.sh",
        "oxford_pets",
        "1",
        repo=fake_repo,
        cwd=elsewhere,
        DRY_RUN="1",
        DATA="../data",
        OUTPUT="runs",
        TRAINER="CoOp",
    )
    (cmd,) = commands(proc)
    assert cmd.flag("--root") == "../data"  # relative paths stay relative to the caller's directory
    assert cmd.flag("--output-dir").startswith("runs/base2new/train_base/")
    proc = run_script(
        "base2new/train.sh",
        "oxford_pets",
        "1",
        repo=fake_repo,
        cwd=elsewhere,
        DRY_RUN="1",
        DATA="../data",
        TRAINER="CoOp",
    )
    assert commands(proc)[0].flag("--output-dir").startswith(str(fake_repo / "output") + "/")


@pytest.mark.parametrize(
    "script,args,env,message",
    [
        ("base2new/train.sh", ["oxford_pets", "1"], {}, "DATA is not set: export DATA=/path/to/datasets"),
        ("base2new/test.sh", ["oxford_pets", "1"], {"DATA": ""}, "DATA is not set"),
        ("base2new/train.sh", ["oxford_pets", "1"], {"DATA": "/no/such/dir"}, "DATA=/no/such/dir is not a directory"),
        (
            "base2new/train.sh",
            ["pets", "1"],
            {"DATA": "."},
            "unknown dataset 'pets' for base-to-novel; expected one of: imagenet",
        ),
        ("base2new/train.sh", ["oxford_pets"], {"DATA": "."}, "usage: base2new/train.sh DATASET SEED"),
        ("base2new/train.sh", ["oxford_pets", "x"], {"DATA": "."}, "SEED must be a non-negative integer"),
        ("base2new/train.sh", ["oxford_pets", "1", "OPTIM.LR"], {"DATA": "."}, "extra options must be KEY VALUE pairs"),
        (
            "base2new/train.sh",
            ["oxford_pets", "1", "DATASET.SUBSAMPLE_CLASSES", "all"],
            {"DATA": "."},
            "DATASET.SUBSAMPLE_CLASSES is set by the protocol scripts",
        ),
        ("base2new/train.sh", ["oxford_pets", "1"], {"DATA": ".", "TRAINER": "CoOp", "CFG": "nope"}, "no config file"),
        ("cross_dataset/test.sh", ["imagenetv2", "1"], {"DATA": "."}, "unknown dataset 'imagenetv2' for cross-dataset"),
        ("domain_generalization/test.sh", ["oxford_pets", "1"], {"DATA": "."}, "for domain generalisation"),
        (
            "base2new/test.sh",
            ["oxford_pets", "1"],
            {"DATA": ".", "TRAINER": "CoOp"},
            "run first: TRAINER=CoOp OUTPUT=",
        ),
    ],
)
def test_user_errors_are_one_line(fake_repo, script, args, env, message):
    proc = run_script(script, *args, repo=fake_repo, OUTPUT=str(fake_repo.parent / "out"), **env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and message in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_missing_config_lists_the_available_ones(fake_repo):
    proc = run_script("base2new/train.sh", "oxford_pets", "1", repo=fake_repo, DATA=".", TRAINER="CoOp", CFG="nope")
    assert "configs/trainers/CoOp/nope.yaml" in proc.stderr and "available: vit_b16" in proc.stderr


# ---- end to end: tiny CLIP, generated datasets ---------------------------------------------------
FAST = [
    "INPUT.SIZE",
    "(32, 32)",
    "OPTIM.NAME",
    "adam",
    "OPTIM.LR",
    "0.01",
    "OPTIM.MAX_EPOCH",
    "2",
    "DATALOADER.NUM_WORKERS",
    "0",
    "DATALOADER.TEST.BATCH_SIZE",
    "16",
    "TRAINER.COOP.PREC",
    "fp32",
]
BASE2NEW_STEPS = (("base2new/train.sh", "oxford_pets", "1"), ("base2new/test.sh", "oxford_pets", "1"))
CROSS_STEPS = (("cross_dataset/train.sh", "1"), ("cross_dataset/test.sh", "oxford_pets", "1"))


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, tiny_clip_state_dict_file):  # noqa: F811
    root = tmp_path_factory.mktemp("protocols")
    pets = write_dataset("OxfordPets", root / "data", n_classes=6, n_per_class=10)
    write_dataset("ImageNet", root / "data", n_classes=4, n_per_class=6)
    descriptions = write_descriptions(root / "descriptions.json", pets.classnames)
    opts = [
        "MODEL.BACKBONE.PATH",
        str(tiny_clip_state_dict_file),
        *FAST,
        "TRAINER.ANCHOROPT.DESCRIPTIONS",
        str(descriptions),
        "TRAINER.ANCHOROPT.MAX_TEMPLATE_LENGTH",
        "3",
    ]
    env = {"DATA": str(root / "data"), "OUTPUT": str(root / "output"), "STAGE1_OPTS": "OPTIM.MAX_EPOCH 1"}
    return root, opts, env


@pytest.fixture(scope="module")
def chains(e2e) -> dict[str, list[subprocess.CompletedProcess]]:
    """The script chains, run side by side (their output folders are disjoint); each stops at a failure."""
    root, opts, env = e2e
    todo = {
        "CoOp": ("CoOp", BASE2NEW_STEPS),
        "cross": ("CoOp", CROSS_STEPS),
        "CoOp_AnchorOPT": ("CoOp_AnchorOPT", BASE2NEW_STEPS),
    }

    return run_chains(todo, opts, env)


def run_chains(
    todo: dict[str, tuple[str, tuple]], opts: list[str], env: dict[str, str]
) -> dict[str, list[subprocess.CompletedProcess]]:
    """Run each ``name: (TRAINER, steps)`` chain of scripts, chains side by side; a chain stops at a failure."""

    def run_chain(trainer, steps):
        done = []
        for step in steps:
            done.append(run_script(*step, *opts, cwd="/", TRAINER=trainer, **env))
            if done[-1].returncode:
                break
        return done

    with ThreadPoolExecutor(len(todo)) as pool:
        futures = {name: pool.submit(run_chain, *job) for name, job in todo.items()}
        return {name: future.result() for name, future in futures.items()}


def succeeded(chain: list[subprocess.CompletedProcess], steps: int = 2) -> list[str]:
    for proc in chain:
        assert proc.returncode == 0, " ".join(proc.args) + "\n" + proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(chain) == steps
    return [proc.stdout for proc in chain]


def run_ok(script: str, *args: str, **env: str) -> str:
    (out,) = succeeded([run_script(script, *args, cwd="/", **env)], steps=1)
    return out


def run_dir(
    root: Path, kind: str, trainer: str, dataset: str = "oxford_pets", protocol: str = "base2new", cfg: str = ""
) -> Path:
    cfg = cfg or ("released" if trainer == "AnchorOPT_StageI" else "vit_b16")  # Stage I: the default recipe
    return root / "output" / protocol / kind / dataset / "shots_16" / trainer / cfg / "seed1"


def accuracy(folder: Path) -> float:
    return json.loads((folder / "results.json").read_text())["metrics"]["accuracy"]


def table_json(root: Path, capsys) -> dict:
    capsys.readouterr()
    assert results_main([str(root / "output"), "--seeds", "1", "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def pets_row(data: dict, trainer: str) -> dict:
    (m,) = [m for m in data["base2new"] if m["trainer"] == trainer]
    return [r for r in m["datasets"] if r["dataset"] == "OxfordPets"][0]


@pytest.mark.slow  # end to end through train.py subprocesses or scripts
def test_coop_base2new_end_to_end(e2e, chains, capsys):
    root, opts, env = e2e
    train_out, _ = succeeded(chains["CoOp"])
    assert "base-class accuracy" in train_out
    train_dir, test_dir = run_dir(root, "train_base", "CoOp"), run_dir(root, "test_new", "CoOp")
    base, new = (json.loads((d / "results.json").read_text()) for d in (train_dir, test_dir))
    assert (base["protocol"], base["subsample"], base["num_classes"]) == ("base2new", "base", 3)
    assert (new["protocol"], new["subsample"], new["num_classes"]) == ("base2new", "new", 3)
    assert "model.pth.tar-2" in (test_dir / "log.txt").read_text()  # the last epoch of the training run
    row = pets_row(table_json(root, capsys), "CoOp")
    b, n = base["metrics"]["accuracy"], new["metrics"]["accuracy"]
    assert (row["base"]["mean"], row["novel"]["mean"]) == (b, n)
    assert row["hm"] == pytest.approx(2 * b * n / (b + n)) and row["complete"]
    capsys.readouterr()
    assert results_main([str(root / "output"), "--seeds", "1"]) == 0
    text = [line for line in capsys.readouterr().out.splitlines() if line.startswith("OxfordPets")][0]
    assert f"{b:.2f} / {n:.2f} / {2 * b * n / (b + n):.2f}" in text


@pytest.mark.slow  # end to end through train.py subprocesses or scripts
def test_finished_run_is_not_redone(e2e, chains):
    root, opts, env = e2e
    succeeded(chains["CoOp"])
    train_dir = run_dir(root, "train_base", "CoOp")
    checkpoint = train_dir / "prompt_learner" / "model.pth.tar-2"
    before = {p: p.stat().st_mtime_ns for p in (checkpoint, train_dir / "results.json", train_dir / "log.txt")}
    out = run_ok("base2new/train.sh", "oxford_pets", "1", *opts, TRAINER="CoOp", **env)
    assert "already finished, not retrained" in out and "Loading trainer" not in out
    assert {p: p.stat().st_mtime_ns for p in before} == before


@pytest.mark.slow  # end to end through train.py subprocesses or scripts
def test_run_all_skips_an_absent_dataset_and_still_prints_the_table(e2e, chains):
    root, opts, env = e2e
    succeeded(chains["CoOp"])
    proc = run_script(
        "base2new/run_all.sh", *opts, cwd="/", TRAINER="CoOp", DATASETS="eurosat oxford_pets", SEEDS="1", **env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "already finished, not retrained" in proc.stdout and "Loading trainer" not in proc.stdout
    table = [line for line in proc.stdout.splitlines() if line.startswith("OxfordPets")]
    assert table and "CoOp" in proc.stdout
    tail = proc.stdout.splitlines()[-1]
    assert tail == f"[base2new/run_all.sh] skipped eurosat: no folder {root / 'data' / 'eurosat'} (see CoOp's " + (
        "DATASETS.md, or anchoropt-prepare-data)"
    )


@pytest.mark.slow  # end to end through train.py subprocesses or scripts
def test_coop_anchoropt_base2new_end_to_end_beside_coop(e2e, chains, capsys):
    root, opts, env = e2e
    succeeded(chains["CoOp"])
    train_out, test_out = succeeded(chains["CoOp_AnchorOPT"])
    assert "Stage I: learning the anchor" in train_out and "base-class accuracy" in train_out
    train_dir, test_dir = run_dir(root, "train_base", "CoOp_AnchorOPT"), run_dir(root, "test_new", "CoOp_AnchorOPT")
    stage1_dir = run_dir(root, "train_base", "AnchorOPT_StageI")
    assert (stage1_dir / "anchor.pth").is_file()
    base = json.loads((train_dir / "results.json").read_text())
    assert base["config"].count(str(stage1_dir)) == 1  # Stage II trained from this Stage I anchor
    assert "MAX_EPOCH: 1\n" in json.loads((stage1_dir / "results.json").read_text())["config"]  # Stage I's epochs
    assert "MAX_EPOCH: 2\n" in base["config"]

    data = table_json(root, capsys)
    pairs = {
        "CoOp": (run_dir(root, "train_base", "CoOp"), run_dir(root, "test_new", "CoOp")),
        "CoOp_AnchorOPT": (train_dir, test_dir),
        "AnchorOPT_StageI": (stage1_dir, run_dir(root, "test_new", "AnchorOPT_StageI")),
    }
    for trainer, (tdir, ndir) in pairs.items():
        b, n = accuracy(tdir), accuracy(ndir)
        row = pets_row(data, trainer)
        assert (row["base"]["mean"], row["novel"]["mean"]) == (b, n)
        assert row["hm"] == pytest.approx(2 * b * n / (b + n))
    assert [m["trainer"] for m in data["base2new"]] == ["CoOp", "CoOp_AnchorOPT", "AnchorOPT_StageI"]

    before = {p: p.stat().st_mtime_ns for p in (train_dir / "results.json", stage1_dir / "anchor.pth")}
    out = run_ok("base2new/train.sh", "oxford_pets", "1", *opts, TRAINER="CoOp_AnchorOPT", **env)
    assert "already finished, not retrained" in out and "Stage I" not in out
    assert {p: p.stat().st_mtime_ns for p in before} == before


@pytest.mark.slow  # end to end through train.py subprocesses or scripts
def test_cross_dataset_end_to_end(e2e, chains, capsys):
    root, opts, env = e2e
    succeeded(chains["cross"])
    source = run_dir(root, "train", "CoOp", "imagenet", "cross_dataset")
    target = run_dir(root, "test", "CoOp", "oxford_pets", "cross_dataset")
    assert json.loads((target / "results.json").read_text())["num_classes"] == 6  # all target classes
    assert "model.pth.tar-2" in (target / "log.txt").read_text() and str(source) in (target / "log.txt").read_text()
    data = table_json(root, capsys)
    (xd,) = [m for m in data["cross_dataset"] if m["trainer"] == "CoOp"]
    by_name = {e["dataset"]: e["accuracy"] for e in xd["datasets"]}
    assert by_name["ImageNet"]["mean"] == accuracy(source) and by_name["OxfordPets"]["mean"] == accuracy(target)
    assert by_name["Caltech101"] is None and xd["average"]["complete"] is False
    assert data["domain_generalization"] == []  # no DG evaluation was run: no DG row is made up


# The other baselines and their AnchorOPT versions, with their scripts' default configs (scripts/common.sh).
VARIANT_CFGS = {
    "CoCoOp": "vit_b16_c4_ep10_batch1_ctxv1",
    "CoCoOp_AnchorOPT": "vit_b16",
    "DePT": "vit_b16_ep20_bs4_lr35",
    "DePT_AnchorOPT": "vit_b16",
    "MaPLe": "vit_b16_c2_ep5_batch4_2ctx",
    "MaPLe_AnchorOPT": "vit_b16",
}


@pytest.mark.slow  # end to end through train.py subprocesses or scripts
def test_every_baseline_with_and_without_anchoropt_through_the_scripts_in_one_table(e2e, chains, capsys):
    root, opts, env = e2e
    succeeded(chains["CoOp_AnchorOPT"])  # its Stage I anchor for oxford_pets, seed 1 is shared by the variants
    anchor = run_dir(root, "train_base", "AnchorOPT_StageI") / "anchor.pth"
    anchor_time = anchor.stat().st_mtime_ns
    # The tiny CLIP has two layers per tower: MaPLe's prompt depth (9 for ViT-B/16) must fit in them.
    variant_opts = [
        *opts,
        "TRAINER.MAPLE.PROMPT_DEPTH",
        "2",
        "TRAINER.COCOOP.PREC",
        "fp32",
        "TRAINER.MAPLE.PREC",
        "fp32",
    ]
    done = run_chains({t: (t, BASE2NEW_STEPS) for t in VARIANT_CFGS}, variant_opts, env)
    for trainer, cfg in VARIANT_CFGS.items():
        train_out, _ = succeeded(done[trainer])
        assert "base-class accuracy" in train_out, trainer
        assert "Stage I: learning the anchor" not in train_out, trainer
        assert ("reusing the anchor" in train_out) == trainer.endswith("_AnchorOPT"), trainer
        for kind, subsample in (("train_base", "base"), ("test_new", "new")):
            record = json.loads((run_dir(root, kind, trainer, cfg=cfg) / "results.json").read_text())
            assert (record["trainer"], record["subsample"], record["num_classes"]) == (trainer, subsample, 3)
            if trainer.endswith("_AnchorOPT") and kind == "train_base":
                assert str(anchor.parent) in record["config"]  # Stage II trained from the shared Stage I anchor
    assert anchor.stat().st_mtime_ns == anchor_time

    data = table_json(root, capsys)
    listed = [m["trainer"] for m in data["base2new"]]
    assert set(VARIANT_CFGS) | {"CoOp", "CoOp_AnchorOPT"} <= set(listed)
    for trainer, cfg in VARIANT_CFGS.items():
        b = accuracy(run_dir(root, "train_base", trainer, cfg=cfg))
        n = accuracy(run_dir(root, "test_new", trainer, cfg=cfg))
        row = pets_row(data, trainer)
        assert (row["base"]["mean"], row["novel"]["mean"]) == (b, n)
        assert row["hm"] == pytest.approx(2 * b * n / (b + n))
    capsys.readouterr()
    assert results_main([str(root / "output"), "--seeds", "1"]) == 0
    header = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Dataset")][0]
    for trainer in [*VARIANT_CFGS, "CoOp", "CoOp_AnchorOPT"]:
        assert trainer in header.split()


# ---- run identity: a changed command never reuses, resumes into or overwrites another run ----------------------
def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder``: its sha256 and mtime."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_line_error(proc: subprocess.CompletedProcess, *parts: str) -> str:
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for part in parts:
        assert part in lines[0]
    return lines[0]


def run_config(folder: Path) -> dict:
    import yaml

    return yaml.safe_load(json.loads((folder / "results.json").read_text())["config"])


def test_changed_options_after_a_finished_run_stop_the_scripts(e2e, chains):
    root, opts, env = e2e
    succeeded(chains["CoOp"])
    train_dir, test_dir = run_dir(root, "train_base", "CoOp"), run_dir(root, "test_new", "CoOp")
    n_ctx = run_config(train_dir)["TRAINER"]["COOP"]["N_CTX"]
    before = snapshot(root / "output")
    changed = [*opts, "OPTIM.MAX_EPOCH", "3", "TRAINER.COOP.N_CTX", "8"]
    proc = run_script("base2new/train.sh", "oxford_pets", "1", *changed, cwd="/", TRAINER="CoOp", **env)
    line = one_line_error(
        proc, f"{train_dir} holds a finished run", f"OPTIM.MAX_EPOCH: 2 -> 3, TRAINER.COOP.N_CTX: {n_ctx} -> 8"
    )
    assert "OUTPUT=" in line and "OVERWRITE=1" in line
    proc = run_script("base2new/test.sh", "oxford_pets", "1", *changed, cwd="/", TRAINER="CoOp", **env)
    one_line_error(proc, f"{test_dir} holds a finished run", f"TRAINER.COOP.N_CTX: {n_ctx} -> 8")
    assert snapshot(root / "output") == before


def test_changed_options_after_an_interrupted_run_stop_the_script_and_the_same_ones_resume(e2e, chains, tmp_path):
    root, opts, env = e2e
    succeeded(chains["CoOp"])
    finished = run_dir(root, "train_base", "CoOp")
    out = tmp_path / "output"
    interrupted = out / finished.relative_to(root / "output")
    # What a run killed after its last checkpoint leaves: checkpoints, log, identity; no results yet.
    shutil.copytree(finished, interrupted, ignore=shutil.ignore_patterns("results*.json"))
    before = snapshot(out)
    env = {**env, "OUTPUT": str(out)}
    proc = run_script(
        "base2new/train.sh", "oxford_pets", "1", *opts, "OPTIM.LR", "0.02", cwd="/", TRAINER="CoOp", **env
    )
    one_line_error(proc, f"{interrupted} holds an interrupted run", "OPTIM.LR: 0.01 -> 0.02")
    assert snapshot(out) == before
    resumed = run_ok("base2new/train.sh", "oxford_pets", "1", *opts, TRAINER="CoOp", **env)
    assert f"resuming the unfinished run in {interrupted}" in resumed
    assert accuracy(interrupted) == accuracy(finished)


def test_stage1_reuse_is_checked_against_the_anchors_provenance(e2e, chains):
    root, opts, env = e2e
    succeeded(chains["CoOp_AnchorOPT"])
    stage1 = run_dir(root, "train_base", "AnchorOPT_StageI")
    before = snapshot(root / "output")
    proc = run_script(
        "base2new/train.sh", "oxford_pets", "1", *opts, cwd="/", TRAINER="CoOp_AnchorOPT",
        **{**env, "STAGE1_OPTS": "OPTIM.MAX_EPOCH 2"},
    )  # fmt: skip
    one_line_error(proc, f"{stage1} holds a finished run", "(OPTIM.MAX_EPOCH: 1 -> 2)")
    descriptions = root / "descriptions.json"
    original = descriptions.read_bytes()
    lacking = json.loads(original)
    lacking.pop(sorted(lacking)[0])  # a class less: a fresh Stage I would refuse it
    try:
        descriptions.write_text(json.dumps(lacking))
        proc = run_script("base2new/train.sh", "oxford_pets", "1", *opts, cwd="/", TRAINER="CoOp_AnchorOPT", **env)
        one_line_error(proc, f"{stage1} holds a finished run", f"descriptions file {descriptions} (sha256)")
    finally:
        descriptions.write_bytes(original)
    assert snapshot(root / "output") == before


def test_overwrite_moves_the_earlier_run_aside_and_tables_name_the_backbone_loaded(
    e2e,
    chains,
    tmp_path,
    tiny_clip_state_dict_file,
    capsys,  # noqa: F811
):
    root, opts, env = e2e
    succeeded(chains["CoOp"])
    out = tmp_path / "output"
    earlier = out / run_dir(root, "train_base", "CoOp").relative_to(root / "output")
    shutil.copytree(run_dir(root, "train_base", "CoOp"), earlier)
    before = snapshot(earlier)
    named = tmp_path / "weights" / "ViT-B-16.pt"  # named like OpenAI's file; holds the tiny CLIP
    named.parent.mkdir()
    shutil.copy(tiny_clip_state_dict_file, named)
    changed = [*opts, "MODEL.BACKBONE.PATH", str(named), "OPTIM.MAX_EPOCH", "1"]
    stdout = run_ok(
        "base2new/train.sh",
        "oxford_pets",
        "1",
        *changed,
        TRAINER="CoOp",
        **{**env, "OUTPUT": str(out), "OVERWRITE": "1"},
    )
    aside = Path(f"{earlier}.replaced-1")
    assert "moved aside" in stdout and snapshot(aside) == before  # moved, not changed, not deleted
    record = json.loads((earlier / "results.json").read_text())
    assert run_config(earlier)["OPTIM"]["MAX_EPOCH"] == 1
    sha = hashlib.sha256(named.read_bytes()).hexdigest()
    assert record["backbone"] == f"ViT-B-16.pt@{sha[:8]}" and record["backbone_identity"]["sha256"] == sha

    capsys.readouterr()
    assert results_main([str(out), "--seeds", "1", "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert "left out 1 results file(s) of runs moved aside" in captured.err
    (group,) = json.loads(captured.out)["base2new"]
    assert group["backbone"] == record["backbone"]
    # Beside the earlier run (another backbone file): two groups, never one cell; no published numbers for either.
    (out / "earlier").mkdir()
    shutil.copy(aside / "results.json", out / "earlier" / "results.json")
    assert results_main([str(out), "--seeds", "1", "--format", "json", "--paper"]) == 0
    groups = json.loads(capsys.readouterr().out)["base2new"]
    tiny = hashlib.sha256(Path(tiny_clip_state_dict_file).read_bytes()).hexdigest()[:8]
    assert sorted(g["backbone"] for g in groups) == sorted(
        [record["backbone"], f"{Path(tiny_clip_state_dict_file).name}@{tiny}"]
    )
    for g in groups:
        pets = [r for r in g["datasets"] if r["dataset"] == "OxfordPets"][0]
        assert pets["paper"] is None and g["average"]["paper"] is None
    means = sorted(pets_row({"base2new": [g]}, "CoOp")["base"]["mean"] for g in groups)
    assert means == sorted([accuracy(earlier), accuracy(aside)])
