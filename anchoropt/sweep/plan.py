"""A sweep's jobs: one protocol-script call each, with the dependencies between them.

The protocol scripts stay the only place that composes ``train.py`` command lines: a job *is* a
script call (``bash scripts/base2new/train.sh DATASET SEED KEY VALUE ...`` with its environment),
and whether a job still has work is asked of the script itself through its ``DRY_RUN=1`` mode (it
prints the ``train.py`` commands it would run; none means the run is finished).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from anchoropt.errors import UserError

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
PROTOCOLS = ("base2new", "cross_dataset", "dg")
# The dataset lists of scripts/common.sh, per protocol (read from there, never copied here).
DATASET_LISTS = {"base2new": "AO_BASE2NEW_DATASETS", "cross_dataset": "AO_XD_TARGETS", "dg": "AO_DG_TARGETS"}
LOG_DIR = "sweep_logs"
# Script variables the sweep sets per job (or leaves unset on purpose), never inherited from the caller.
SWEEP_OWNED = ("TRAINER", "CFG", "SHOTS", "STAGE1_ONLY", "DRY_RUN", "DRY_RUN_CHECK", "DATASETS", "SEEDS")
# Script variables a caller may have exported for the whole sweep: recorded in every job (Slurm runs them later).
SWEEP_WIDE = ("STAGE1_CFG", "STAGE1_OPTS", "PYTHON")
ANCHOR_PATH_KEY = "TRAINER.ANCHOROPT.ANCHOR_PATH"


class SweepError(UserError):
    """The sweep's arguments are wrong (an unknown protocol or dataset, a missing folder, ...)."""


@dataclass(frozen=True)
class Job:
    """One protocol-script call. ``env`` holds only what the sweep sets; the rest comes from the caller's."""

    name: str
    script: str  # relative to scripts/, e.g. "base2new/train.sh"
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    deps: tuple[str, ...] = ()  # names of jobs that must finish first
    log: str = ""

    def command(self) -> list[str]:
        return ["bash", str(SCRIPTS / self.script), *self.args]

    def environ(self, base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        for name in SWEEP_OWNED:  # a value exported in the caller's shell must not reach every job
            env.pop(name, None)
        env.update(self.env)
        env.update(extra)
        return env

    def shell_line(self) -> str:
        """The job as one shell line a user could paste (the sweep's variables, then the script call)."""
        assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env)
        return f"{assignments} {shlex.join(self.command())}"


@dataclass
class SweepSpec:
    protocols: list[str]
    trainers: list[str]
    seeds: list[int]
    data: str
    output: str
    datasets: list[str] | None = None  # None: every dataset of each protocol
    shots: list[int] = field(default_factory=lambda: [16])
    opts: list[str] = field(default_factory=list)  # extra KEY VALUE options for every script call
    cfgs: dict[str, str] = field(default_factory=dict)  # trainer -> CFG
    env: dict[str, str] = field(default_factory=dict)  # further script variables (STAGE1_CFG, STAGE1_OPTS, ...)

    @property
    def log_dir(self) -> Path:
        return Path(self.output) / LOG_DIR


def script_lists() -> dict[str, list[str]]:
    """The per-protocol dataset lists defined in scripts/common.sh."""
    if not (SCRIPTS / "common.sh").is_file():
        raise SweepError(f"no protocol scripts in {SCRIPTS}: anchoropt-sweep runs from a checkout of the repository")
    code = f"source {shlex.quote(str(SCRIPTS / 'common.sh'))}; " + "; ".join(
        f'echo "${v}"' for v in DATASET_LISTS.values()
    )
    out = subprocess.run(["bash", "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    return {protocol: line.split() for protocol, line in zip(DATASET_LISTS, out)}


def two_stage(trainer: str) -> bool:
    return trainer.endswith("_AnchorOPT")  # as ao_is_two_stage in scripts/common.sh


def _check(spec: SweepSpec, lists: dict[str, list[str]]) -> None:
    bad = [p for p in spec.protocols if p not in PROTOCOLS]
    if bad:
        raise SweepError(f"unknown protocol {bad[0]!r}; expected one of: {' '.join(PROTOCOLS)}")
    if not spec.trainers or not spec.seeds:
        raise SweepError("a sweep needs at least one trainer (--trainers) and one seed (--seeds)")
    if len(spec.opts) % 2:
        raise SweepError(f"extra options must be KEY VALUE pairs, got: {' '.join(spec.opts)}")
    if not spec.data or not Path(spec.data).is_dir():
        raise SweepError(f"the dataset root {spec.data or '(unset)'} is not a directory: give --data or export DATA")
    if spec.datasets is not None:
        known = {d for p in spec.protocols for d in lists[p]}
        unknown = [d for d in spec.datasets if d not in known]
        if unknown:
            wanted = " ".join(dict.fromkeys(d for p in spec.protocols for d in lists[p]))
            raise SweepError(
                f"unknown dataset {unknown[0]!r} for {' / '.join(spec.protocols)}; expected one of: {wanted}"
            )
    if "DATASET.NUM_SHOTS" in spec.opts[::2]:
        raise SweepError("give the shots with --shots, not DATASET.NUM_SHOTS in the extra options")
    odd = [t for t in spec.cfgs if t not in spec.trainers]
    if odd:
        raise SweepError(f"--cfg names trainer {odd[0]!r}, which is not in --trainers")


def build_plan(spec: SweepSpec) -> list[Job]:
    """Every job of the sweep, dependencies before dependents, each job once."""
    lists = script_lists()
    _check(spec, lists)
    user_anchor = ANCHOR_PATH_KEY in spec.opts[::2]
    stage1_trainer = next((t for t in spec.trainers if two_stage(t)), None) if not user_anchor else None
    common = {"DATA": str(Path(spec.data).resolve()), "OUTPUT": str(Path(spec.output).resolve())}
    common["PYTHON"] = sys.executable  # the jobs run on the sweep's interpreter unless told otherwise
    common.update({name: os.environ[name] for name in SWEEP_WIDE if name in os.environ})
    common.update(spec.env)
    jobs: dict[str, Job] = {}

    def add(name: str, script: str, args: list[str], trainer: str, shots: int, deps=(), **env: str) -> str:
        full_env = {**common, "TRAINER": trainer, "SHOTS": str(shots), **env}
        if trainer in spec.cfgs:
            full_env["CFG"] = spec.cfgs[trainer]
        if name not in jobs:
            log = str(spec.log_dir / (name.replace("/", "__") + ".log"))
            jobs[name] = Job(name, script, (*args, *spec.opts), tuple(sorted(full_env.items())), tuple(deps), log)
        return name

    def datasets_of(protocol: str) -> list[str]:
        known = lists[protocol]
        return known if spec.datasets is None else [d for d in spec.datasets if d in known]

    for protocol in spec.protocols:
        targets = datasets_of(protocol)
        if not targets:
            raise SweepError(f"none of the datasets given is one of {protocol}'s: {' '.join(lists[protocol])}")
        for shots in spec.shots:
            tag = f"shots{shots}"
            for seed in map(str, spec.seeds):
                if protocol == "base2new":
                    for dataset in targets:
                        where = f"{dataset}/{tag}/seed{seed}"
                        stage1 = stage1_eval = None
                        if stage1_trainer:
                            stage1 = add(
                                f"base2new/stage1/{where}",
                                "base2new/train.sh",
                                [dataset, seed],
                                stage1_trainer,
                                shots,
                                STAGE1_ONLY="1",
                            )
                            stage1_eval = add(
                                f"base2new/stage1_test/{where}",
                                "base2new/test.sh",
                                [dataset, seed],
                                stage1_trainer,
                                shots,
                                [stage1],
                                STAGE1_ONLY="1",
                            )
                        for trainer in spec.trainers:
                            pre = [stage1] if stage1 and two_stage(trainer) else []
                            train = add(
                                f"base2new/train/{trainer}/{where}",
                                "base2new/train.sh",
                                [dataset, seed],
                                trainer,
                                shots,
                                pre,
                            )
                            after = [train, stage1_eval] if pre else [train]
                            add(
                                f"base2new/test/{trainer}/{where}",
                                "base2new/test.sh",
                                [dataset, seed],
                                trainer,
                                shots,
                                after,
                            )
                    continue
                # cross-dataset and DG: one source model per trainer and seed (cross_dataset/train.sh)
                where = f"{tag}/seed{seed}"
                stage1 = None
                if stage1_trainer:
                    stage1 = add(
                        f"cross_dataset/stage1/{where}",
                        "cross_dataset/train.sh",
                        [seed],
                        stage1_trainer,
                        shots,
                        STAGE1_ONLY="1",
                    )
                test_script = (
                    "cross_dataset/test.sh" if protocol == "cross_dataset" else "domain_generalization/test.sh"
                )
                for trainer in spec.trainers:
                    pre = [stage1] if stage1 and two_stage(trainer) else []
                    train = add(
                        f"cross_dataset/train/{trainer}/{where}", "cross_dataset/train.sh", [seed], trainer, shots, pre
                    )
                    for dataset in targets:
                        add(
                            f"{protocol}/test/{trainer}/{dataset}/{where}",
                            test_script,
                            [dataset, seed],
                            trainer,
                            shots,
                            [train],
                        )
    return list(jobs.values())


# ---- asking the scripts what is left ---------------------------------------------------------
@dataclass
class Probe:
    """What a job's script would run now (its DRY_RUN=1 output), or why it refused. ``checks``: the
    ``train.py`` arguments of the existing runs the script would check before running (``? `` lines)."""

    commands: list[str]
    error: str = ""
    checks: list[list[str]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return not self.commands and not self.error


def probe(job: Job, check: bool = True) -> Probe:
    """The job's script in DRY_RUN mode; OVERWRITE=0: a probe never moves a run aside (the job does, when
    OVERWRITE=1 was asked for). ``check``: the script also lists the existing runs it would check
    (DRY_RUN_CHECK=print); `check_runs` then checks them all in this process, as the job's own
    ``train.py --check-run`` calls would."""
    env = job.environ(DRY_RUN="1", DRY_RUN_CHECK="print" if check else "0", OVERWRITE="0")
    proc = subprocess.run(job.command(), env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()] or [f"exit status {proc.returncode}"]
        return Probe([], lines[-1])
    lines = proc.stdout.splitlines()
    checks = [shell_words(line[2:]) for line in lines if line.startswith("? ")]
    return Probe([line[2:] for line in lines if line.startswith("+ ")], checks=checks)


def shell_words(quoted: str) -> list[str]:
    """The words of a line the scripts printed with bash's ``printf %q``, split by bash itself (``%q`` may
    use ``$'...'``, which shlex does not read)."""
    code = f'set -- {quoted}; printf "%s\\0" "$@"'
    out = subprocess.run(["bash", "-c", code], capture_output=True, text=True, check=True).stdout
    return out.split("\0")[:-1]


def check_runs(probes: dict[str, Probe]) -> None:
    """Every existing run a script would check, checked here in one process (one ``train.py --check-run``
    process each would start Python and torch hundreds of times for a paper-sized sweep): a run of other
    settings, or a command train.py would refuse, makes the job's probe an error with train.py's message."""
    import warnings

    from anchoropt.cli.errors import user_error_message
    from anchoropt.cli.train import command_status

    for found in probes.values():
        for argv in found.checks:
            try:
                with warnings.catch_warnings():  # as the scripts run the check: PYTHONWARNINGS=ignore
                    warnings.simplefilter("ignore")
                    status = command_status(argv)
            except UserError as e:
                found.error = f"error: {user_error_message(e)}"
            else:
                if status.conflict:
                    found.error = f"error: {status.message()}"
            if found.error:
                found.commands = []
                break


def probe_all(jobs: list[Job], workers: int = 8) -> dict[str, Probe]:
    with ThreadPoolExecutor(workers) as pool:
        probes = dict(zip((j.name for j in jobs), pool.map(probe, jobs)))
    check_runs(probes)
    return probes


def pending_jobs(jobs: list[Job], probes: dict[str, Probe]) -> set[str]:
    """The jobs to run: those whose script still has work, and everything after one of them."""
    pending: set[str] = set()
    for job in jobs:  # dependencies come first
        if not probes[job.name].finished or any(d in pending for d in job.deps):
            pending.add(job.name)
    return pending
