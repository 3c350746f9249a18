"""``anchoropt-sweep``: plans of protocol-script jobs, run for real by the local launcher and by submitit's
local executor on generated data with the tiny CLIP; the Slurm submission checked with stand-in sbatch/srun."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from anchoropt.cli.errors import run_cli
from anchoropt.cli.results import main as results_main
from anchoropt.cli.sweep import main as sweep_main
from anchoropt.sweep.execute import run_job
from anchoropt.sweep.plan import SweepSpec, build_plan, shell_words
from tests.support.anchoropt_runs import write_descriptions
from tests.support.clip_fixtures import tiny_clip, tiny_clip_dir, tiny_clip_state_dict_file  # noqa: F401
from tests.support.data_layouts import write_dataset
from tests.support.engine_runs import REPO, subprocess_env

TRAINERS = ["CoOp", "CoOp_AnchorOPT"]
FAST = [
    "INPUT.SIZE", "(32, 32)", "OPTIM.NAME", "adam", "OPTIM.LR", "0.01", "OPTIM.MAX_EPOCH", "1",
    "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TEST.BATCH_SIZE", "16", "TRAINER.COOP.PREC", "fp32",
]  # fmt: skip
# Stands in for the interpreter: the first train.py call whose --output-dir contains $KILL_RUN runs under
# KILL_AT_FIRST_BACKWARD, which kills it and the protocol script that called it at its first backward pass, as a
# cancelled or preempted job ends. Killing at a point of the run itself, not after a wait, keeps a fast training
# from finishing first on a busy machine.
KILLER = """#!/usr/bin/env bash
out=""
for ((i = 1; i <= $#; i++)); do
  if [ "${!i}" = --output-dir ]; then j=$((i + 1)); out=${!j}; fi
done
if [ -n "$out" ] && [[ "$out" == *"$KILL_RUN"* ]] && [ ! -e "$KILL_MARK" ]; then
  touch "$KILL_MARK"
  exec "$REAL_PYTHON" "$KILL_AT_FIRST_BACKWARD" "$@"
fi
exec "$REAL_PYTHON" "$@"
"""
KILL_AT_FIRST_BACKWARD = """import os, runpy, signal, sys
import torch

def killed(*args, **kwargs):
    os.kill(os.getppid(), signal.SIGKILL)  # the protocol script (the stand-in exec'd this interpreter)
    os.kill(os.getpid(), signal.SIGKILL)

torch.Tensor.backward = killed
sys.argv = sys.argv[1:]
sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))  # as if the script itself had been run
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_clip_state_dict_file):  # noqa: F811
    """Generated OxfordPets (3 base + 3 new classes), descriptions and the extra options every sweep passes."""
    root = tmp_path_factory.mktemp("sweep")
    pets = write_dataset("OxfordPets", root / "data", n_classes=6, n_per_class=8)
    descriptions = write_descriptions(root / "descriptions.json", pets.classnames)
    opts = [
        "MODEL.BACKBONE.PATH", str(tiny_clip_state_dict_file), *FAST,
        "TRAINER.ANCHOROPT.DESCRIPTIONS", str(descriptions), "TRAINER.ANCHOROPT.MAX_TEMPLATE_LENGTH", "3",
    ]  # fmt: skip
    killer = root / "python-killer"
    killer.write_text(KILLER)
    killer.chmod(killer.stat().st_mode | stat.S_IEXEC)
    (root / "kill_at_first_backward.py").write_text(KILL_AT_FIRST_BACKWARD)
    return root, opts


def sweep_args(root: Path, output: str, *more: str, seeds=("1", "2")) -> list[str]:
    return [
        "--protocol", "base2new", "--trainers", *TRAINERS, "--datasets", "oxford_pets", "--seeds", *seeds,
        "--data", str(root / "data"), "--output", str(root / output), "--stage1-opts", "OPTIM.MAX_EPOCH 1", *more,
    ]  # fmt: skip


def run_dir(out: Path, kind: str, trainer: str, seed: int) -> Path:
    cfg = "released" if trainer == "AnchorOPT_StageI" else "vit_b16"  # the scripts' default STAGE1_CFG
    return out / "base2new" / kind / "oxford_pets" / "shots_16" / trainer / cfg / f"seed{seed}"


def accuracy(folder: Path) -> float:
    return json.loads((folder / "results.json").read_text())["metrics"]["accuracy"]


def results_files(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in out.rglob("results.json")}


def table(out: Path, capsys) -> dict:
    capsys.readouterr()
    assert results_main([str(out), "--seeds", "1", "2", "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def check_table(out: Path, data: dict, seeds=(1, 2)) -> None:
    """Every trainer's row (and Stage I's) holds the mean over the seeds of its runs' own results.json."""
    assert [m["trainer"] for m in data["base2new"]] == ["CoOp", "CoOp_AnchorOPT", "AnchorOPT_StageI"]
    for model in data["base2new"]:
        trainer = model["trainer"]
        (row,) = [r for r in model["datasets"] if r["dataset"] == "OxfordPets"]
        base = [accuracy(run_dir(out, "train_base", trainer, s)) for s in seeds]
        new = [accuracy(run_dir(out, "test_new", trainer, s)) for s in seeds]
        assert row["base"]["mean"] == pytest.approx(sum(base) / len(base)), trainer
        assert row["novel"]["mean"] == pytest.approx(sum(new) / len(new)), trainer
        assert row["complete"], trainer


def sweep_logs(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (out / "sweep_logs").glob("*.log")}


def run_sweep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "anchoropt.cli.sweep", *args],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=1800,  # a safety net only: on an idle machine the sweep takes about a minute
    )


KILLED = "base2new/train/CoOp/oxford_pets/shots16/seed2"


@pytest.fixture(scope="module")
def killed_sweep(world):
    """The 2-trainer x 2-seed sweep through submitit's local executor, CoOp's seed-2 training killed mid-run."""
    root, opts = world
    kill = {
        "KILL_RUN": "/CoOp/vit_b16/seed2",
        "KILL_MARK": str(root / "killed"),
        "REAL_PYTHON": sys.executable,
        "KILL_AT_FIRST_BACKWARD": str(root / "kill_at_first_backward.py"),
    }
    proc = run_sweep(
        *sweep_args(root, "out", "--launcher", "submitit-local", "--array-parallelism", "2"),
        *("--env", f"PYTHON={root / 'python-killer'}", *(f"{k}={v}" for k, v in kill.items())),
        *("--", *opts),
    )
    return root / "out", proc, results_files(root / "out")


@pytest.mark.slow  # end to end through the protocol scripts
def test_submitit_sweep_reports_a_killed_job_with_its_log_and_finishes_the_others(killed_sweep):
    out, proc, finished = killed_sweep
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    killed_log = out / "sweep_logs" / (KILLED.replace("/", "__") + ".log")
    assert "12 jobs: 10 done, 0 skipped (finished before), 1 failed, 1 not run" in proc.stdout
    assert f"failed:  {KILLED}: killed by signal 9" in proc.stdout and f"log: {killed_log}" in proc.stdout
    assert f"not run: base2new/test/CoOp/oxford_pets/shots16/seed2: not run: {KILLED} did not finish" in proc.stdout
    assert "training CoOp on oxford_pets (base classes, seed 2)" in killed_log.read_text()
    assert (run_dir(out, "train_base", "CoOp", 2) / "log.txt").is_file()  # it had started
    # The failure stopped nothing else: the other trainer and the other seed are complete, and tabulated.
    expected = {run_dir(out, kind, t, s) / "results.json" for kind in ("train_base", "test_new") for s in (1, 2)
                for t in ("CoOp", "CoOp_AnchorOPT", "AnchorOPT_StageI")}  # fmt: skip
    assert set(finished) == expected - {run_dir(out, k, "CoOp", 2) / "results.json" for k in ("train_base", "test_new")}
    assert "Results (anchoropt-results" in proc.stdout and "[1/2 seeds]" in proc.stdout


@pytest.mark.slow  # end to end through the protocol scripts
def test_rerun_with_the_local_launcher_finishes_only_what_is_missing(world, killed_sweep, capsys):
    root, opts = world
    out, _, before = killed_sweep
    capsys.readouterr()
    assert sweep_main(sweep_args(root, "out", "--workers", "2", "--", *opts)) == 0
    rerun = capsys.readouterr().out
    assert "12 jobs: 2 done, 10 skipped (finished before), 0 failed, 0 not run" in rerun
    after = results_files(out)
    assert {p: t for p, t in after.items() if p in before} == before  # no finished run was redone
    assert set(after) - set(before) == {run_dir(out, k, "CoOp", 2) / "results.json" for k in ("train_base", "test_new")}
    check_table(out, table(out, capsys))
    # Stage I ran once per seed, as its own job; both Stage II trainings reused its anchor.
    logs = sweep_logs(out)
    learned = [name for name, text in logs.items() if "Stage I: learning the anchor" in text]
    assert sorted(learned) == [f"base2new__stage1__oxford_pets__shots16__seed{s}.log" for s in (1, 2)]
    assert all(logs[name].count("Stage I: learning the anchor") == 1 for name in learned)
    for seed in (1, 2):
        assert "reusing the anchor" in logs[f"base2new__train__CoOp_AnchorOPT__oxford_pets__shots16__seed{seed}.log"]

    assert sweep_main(sweep_args(root, "out", "--no-table", "--", *opts)) == 0  # once more: nothing left
    assert "12 jobs: 0 done, 12 skipped (finished before), 0 failed, 0 not run" in capsys.readouterr().out
    assert results_files(out) == after

    # Changed options: the finished runs are refused as the scripts refuse them, naming the key.
    changed = [*opts[:-2], "TRAINER.ANCHOROPT.MAX_TEMPLATE_LENGTH", "4"]
    assert opts[-2] == "TRAINER.ANCHOROPT.MAX_TEMPLATE_LENGTH"
    assert sweep_main(sweep_args(root, "out", "--dry-run", "--", *changed)) == 0
    blocks = plan_blocks(capsys.readouterr().out)
    refused = blocks["base2new/stage1/oxford_pets/shots16/seed1"]
    assert refused[0] == "run" and refused[2].startswith("the script refuses: error: ")
    assert "TRAINER.ANCHOROPT.MAX_TEMPLATE_LENGTH: 3 -> 4" in refused[2]
    assert results_files(out) == after


# ---- the plan (no training) ---------------------------------------------------------------------
def script_commands(script: str, *args: str, **env: str) -> list[str]:
    """What the protocol script itself prints in DRY_RUN mode."""
    proc = subprocess.run(
        ["bash", str(Path(REPO) / "scripts" / script), *args],
        env=subprocess_env(DRY_RUN="1", PYTHON=sys.executable, **env),
        capture_output=True,
        text=True,
        check=True,
    )
    return [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]


def plan_blocks(text: str) -> dict[str, list[str]]:
    blocks: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith(("run   ", "skip  ")):
            name = line[6:]
            blocks[name] = [line[:4].strip()]
        elif line.startswith("      ") and blocks:
            blocks[name].append(line.strip())
    return blocks


def test_the_scripts_check_lines_are_read_back_word_for_word(tmp_path):
    """The planner checks existing runs in its own process from the scripts' ``? `` lines (``printf %q``):
    every word, spaces, quotes and line breaks included, must reach train.py's parser unchanged."""
    words = ["--output-dir", str(tmp_path / "a b"), "x'y", 'q"uote', "new\nline", "tab\there", "$HOME", "*"]
    printed = subprocess.run(
        ["bash", "-c", 'printf "?"; printf " %q" "$@"', "-", *words], capture_output=True, text=True, check=True
    ).stdout
    assert printed.startswith("? ") and "\n" not in printed  # one line, as the probe reads it
    assert shell_words(printed[2:]) == words


def test_dry_run_plan_holds_the_scripts_own_commands(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    env = {"DATA": str(tmp_path / "data"), "OUTPUT": str(tmp_path / "out"), "STAGE1_OPTS": "OPTIM.MAX_EPOCH 1"}
    args = ["--protocol", "base2new", "--trainers", "CoOp", "CoOp_AnchorOPT", "MaPLe_AnchorOPT",
            "--datasets", "oxford_pets", "dtd", "--seeds", "1", "2", "--data", env["DATA"], "--output", env["OUTPUT"],
            "--stage1-opts", "OPTIM.MAX_EPOCH 1", "--dry-run", "--", "OPTIM.MAX_EPOCH", "3"]  # fmt: skip
    capsys.readouterr()
    assert sweep_main(args) == 0
    blocks = plan_blocks(capsys.readouterr().out)
    # per dataset and seed: Stage I + its evaluation, then train + test per trainer
    assert len(blocks) == 2 * 2 * (2 + 3 * 2)
    stage1s = [n for n in blocks if "/stage1/" in n]
    assert sorted(stage1s) == sorted(
        f"base2new/stage1/{d}/shots16/seed{s}" for d in ("oxford_pets", "dtd") for s in "12"
    )
    where = "dtd/shots16/seed2"
    direct = script_commands("base2new/train.sh", "dtd", "2", "OPTIM.MAX_EPOCH", "3", TRAINER="MaPLe_AnchorOPT", **env)
    assert len(direct) == 2  # the script alone: Stage I, then Stage II
    assert blocks[f"base2new/stage1/{where}"][2:] == [f"+ {direct[0]}"]  # the sweep: Stage I as its own job
    coop = script_commands("base2new/train.sh", "dtd", "2", "OPTIM.MAX_EPOCH", "3", TRAINER="CoOp", **env)
    assert blocks[f"base2new/train/CoOp/{where}"][2:] == [f"+ {c}" for c in coop]
    assert blocks[f"base2new/train/MaPLe_AnchorOPT/{where}"][2] == f"after: base2new/stage1/{where}"
    assert blocks[f"base2new/test/MaPLe_AnchorOPT/{where}"][2] == (
        f"after: base2new/train/MaPLe_AnchorOPT/{where}, base2new/stage1_test/{where}"
    )
    assert blocks[f"base2new/test/CoOp/{where}"][2] == f"after: base2new/train/CoOp/{where}"
    call = shlex.split(blocks[f"base2new/train/MaPLe_AnchorOPT/{where}"][1][2:])
    assert "TRAINER=MaPLe_AnchorOPT" in call and "STAGE1_ONLY=1" not in call
    assert call[call.index("bash") + 1 :] == [str(Path(REPO) / "scripts/base2new/train.sh"), "dtd", "2",
                                              "OPTIM.MAX_EPOCH", "3"]  # fmt: skip

    # An anchor in the way that the scripts would refuse (no provenance, unreadable) is refused at planning too,
    # as the job itself would be, instead of being taken as finished.
    anchor_dir = tmp_path / "out/base2new/train_base/dtd/shots_16/AnchorOPT_StageI/released/seed2"
    anchor_dir.mkdir(parents=True)
    (anchor_dir / "anchor.pth").write_bytes(b"")
    assert sweep_main(args) == 0
    blocks = plan_blocks(capsys.readouterr().out)
    assert blocks[f"base2new/stage1/{where}"][0] == "run"
    assert blocks[f"base2new/stage1/{where}"][2].startswith(f"the script refuses: error: {anchor_dir}")
    assert blocks["base2new/stage1/dtd/shots16/seed1"][2].startswith("+ ")  # nothing in the way there


def test_cross_dataset_and_dg_share_one_source_training(tmp_path):
    (tmp_path / "data").mkdir()
    spec = SweepSpec(
        protocols=["cross_dataset", "dg"],
        trainers=["CoOp", "CoOp_AnchorOPT"],
        seeds=[1],
        datasets=["oxford_pets", "imagenetv2", "imagenet_r"],
        data=str(tmp_path / "data"),
        output=str(tmp_path / "out"),
    )
    jobs = {j.name: j for j in build_plan(spec)}
    assert sorted(jobs) == sorted([
        "cross_dataset/stage1/shots16/seed1",
        *(f"cross_dataset/train/{t}/shots16/seed1" for t in spec.trainers),
        *(f"cross_dataset/test/{t}/oxford_pets/shots16/seed1" for t in spec.trainers),
        *(f"dg/test/{t}/{d}/shots16/seed1" for t in spec.trainers for d in ("imagenetv2", "imagenet_r")),
    ])  # fmt: skip
    train = jobs["cross_dataset/train/CoOp_AnchorOPT/shots16/seed1"]
    assert train.deps == ("cross_dataset/stage1/shots16/seed1",) and train.args == ("1",)
    dg = jobs["dg/test/CoOp/imagenet_r/shots16/seed1"]
    assert dg.script == "domain_generalization/test.sh" and dg.deps == ("cross_dataset/train/CoOp/shots16/seed1",)
    # A given anchor replaces Stage I: no Stage I job, no dependency on one.
    spec.opts = ["TRAINER.ANCHOROPT.ANCHOR_PATH", "/anchors/imagenet"]
    jobs = {j.name: j for j in build_plan(spec)}
    assert not any("stage1" in n for n in jobs) and jobs["cross_dataset/train/CoOp_AnchorOPT/shots16/seed1"].deps == ()


@pytest.mark.parametrize(
    "more,message",
    [
        (["--datasets", "pets"], "unknown dataset 'pets' for base2new; expected one of: imagenet caltech101"),
        (["--", "DATASET.NUM_SHOTS", "4"], "give the shots with --shots"),
        (["--", "OPTIM.LR"], "extra options must be KEY VALUE pairs"),
        (["--cfg", "MaPLe=x"], "--cfg names trainer 'MaPLe', which is not in --trainers"),
        (["--data", "/no/such/dir"], "the dataset root /no/such/dir is not a directory"),
    ],
)
def test_bad_sweep_arguments_are_one_line_errors(tmp_path, capsys, more, message):
    (tmp_path / "data").mkdir()
    args = ["--protocol", "base2new", "--trainers", "CoOp", "--data", str(tmp_path / "data"),
            "--output", str(tmp_path / "out")]  # fmt: skip
    extra = more[more.index("--") :] if "--" in more else []
    own = more[: more.index("--")] if "--" in more else more
    capsys.readouterr()
    assert run_cli(sweep_main)([*args, *own, "--dry-run", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


# ---- Slurm: the submission, with stand-ins for sbatch and srun ------------------------------------
SBATCH = """#!/usr/bin/env bash
n=$(( $(cat "$SBATCH_RECORD/count" 2>/dev/null || echo 100) + 1 ))
echo "$n" > "$SBATCH_RECORD/count"
cp "$1" "$SBATCH_RECORD/$n.sh"
echo "Submitted batch job $n"
"""


def test_slurm_submission_waves_arrays_dependencies_and_parameters(tmp_path, monkeypatch, capsys):
    bin_dir, record = tmp_path / "bin", tmp_path / "sbatch"
    bin_dir.mkdir()
    record.mkdir()
    for name, text in (("sbatch", SBATCH), ("srun", "#!/usr/bin/env bash\nexit 0\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_RECORD", str(record))
    (tmp_path / "data").mkdir()
    args = ["--protocol", "base2new", "--trainers", *TRAINERS, "--datasets", "oxford_pets", "--seeds", "1", "2",
            "--data", str(tmp_path / "data"), "--output", str(tmp_path / "out"),
            "--launcher", "slurm", "--partition", "gpu", "--gpus", "1", "--cpus", "8", "--mem-gb", "32",
            "--time", "120", "--array-parallelism", "2", "--sbatch", "account=lab", "qos=high",
            "--setup", "module load cuda/12.1", "--no-wait", "--", "OPTIM.MAX_EPOCH", "1"]  # fmt: skip
    capsys.readouterr()
    assert sweep_main(args) == 0
    assert "submitted 4 job(s) as Slurm job 101" in capsys.readouterr().out

    scripts = {int(p.stem): p.read_text() for p in record.glob("*.sh")}
    assert sorted(scripts) == [101, 102, 103]  # three waves, one array each
    for text in scripts.values():
        for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=32GB", "--time=120",
                     "--account=lab", "--qos=high", "--job-name=anchoropt-sweep"):  # fmt: skip
            assert f"#SBATCH {line}\n" in text, line
        assert "module load cuda/12.1\n" in text and "submitit.core._submit" in text
    assert "#SBATCH --array=0-3%2\n" in scripts[101] and "--dependency" not in scripts[101]
    assert "#SBATCH --array=0-5%2\n" in scripts[102] and "#SBATCH --dependency=afterany:101\n" in scripts[102]
    assert "#SBATCH --array=0-1%2\n" in scripts[103] and "#SBATCH --dependency=afterany:102\n" in scripts[103]

    # What each array task runs (its pickled call): a job of the plan and its dependencies, checked before it runs.
    from submitit.slurm.slurm import SlurmJob

    spec = SweepSpec(["base2new"], TRAINERS, [1, 2], str(tmp_path / "data"), str(tmp_path / "out"), ["oxford_pets"])
    spec.opts = ["OPTIM.MAX_EPOCH", "1"]
    plan = {j.name: j for j in build_plan(spec)}
    folder = tmp_path / "out" / "sweep_logs" / "submitit" / "%j"
    waves = {}
    for array, size in ((101, 4), (102, 6), (103, 2)):
        calls = [SlurmJob(folder=folder, job_id=f"{array}_{i}").submission() for i in range(size)]
        for call in calls:
            job, deps = call.args
            assert call.function is run_job and plan[job.name] == job and [d.name for d in deps] == list(job.deps)
        waves[array] = sorted({"/".join(c.args[0].name.split("/")[1:3]) for c in calls})
    assert waves == {
        101: ["stage1/oxford_pets", "train/CoOp"],
        102: ["stage1_test/oxford_pets", "test/CoOp", "train/CoOp_AnchorOPT"],
        103: ["test/CoOp_AnchorOPT"],
    }


# ---- the local launcher's device pool (stand-in scripts, no training) ----------------------------
POOL_JOB = """#!/usr/bin/env bash
echo "$1 start $(date +%s.%N) ${CUDA_VISIBLE_DEVICES}" >> "$RECORD"
sleep 0.4
echo "$1 end $(date +%s.%N)" >> "$RECORD"
if [ "$1" = bad ]; then echo "error: bad is refused"; exit 3; fi
"""


def test_local_launcher_runs_one_job_per_device_in_dependency_order(tmp_path):
    from anchoropt.sweep.execute import BLOCKED, DONE, FAILED
    from anchoropt.sweep.local import LocalLauncher
    from anchoropt.sweep.plan import Job

    script, record = tmp_path / "job.sh", tmp_path / "record.txt"
    script.write_text(POOL_JOB)
    deps = {"a": (), "b": (), "c": (), "d": ("a",), "bad": (), "after_bad": ("bad",), "e": ("d", "c")}
    jobs = [
        Job(name, str(script), (name,), (("RECORD", str(record)),), after, str(tmp_path / "logs" / f"{name}.log"))
        for name, after in deps.items()
    ]
    outcomes = {o.job.name: o for o in LocalLauncher(devices=["3", "5"], log=lambda line: None).run(jobs, set(deps))}
    assert {n: o.status for n, o in outcomes.items()} == {
        **{n: DONE for n in ("a", "b", "c", "d", "e")},
        "bad": FAILED,
        "after_bad": BLOCKED,
    }
    assert outcomes["bad"].message == "exit status 3: error: bad is refused"
    spans: dict[str, list] = {}
    for line in record.read_text().splitlines():
        name, what, when, *device = line.split()
        spans.setdefault(name, [None, None, None])
        spans[name][0 if what == "start" else 1] = float(when)
        if device:
            spans[name][2] = device[0]
    assert "after_bad" not in spans
    assert all(device in ("3", "5") for _, _, device in spans.values())  # one GPU each, from the pool
    for x, (s1, e1, d1) in spans.items():
        for y, (s2, e2, d2) in spans.items():
            if x < y and s1 < e2 and s2 < e1:  # ran at the same time: on different devices
                assert d1 != d2, (x, y)
    assert spans["d"][0] >= spans["a"][1] and spans["e"][0] >= max(spans["d"][1], spans["c"][1])
