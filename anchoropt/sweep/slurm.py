"""The Slurm launcher, through submitit (its local executor runs the same jobs on this machine).

On Slurm the pending jobs go in waves: a job's wave is one more than its latest pending dependency's (Stage I,
then the trainings, then the evaluations). Each wave is one job array (``--array=0-N%P``) that starts after the
previous wave's array has ended (``--dependency=afterany:ID``); ``afterany``, not ``afterok``, so that one
failed run does not cancel the unrelated ones. Each job first checks that its own dependencies finished (asking
their scripts, as the planner does) and is reported as not run when one did not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anchoropt.sweep.execute import BLOCKED, DONE, FAILED, NOT_RUN_MARK, SKIPPED, Outcome, run_job
from anchoropt.sweep.plan import Job, SweepError


@dataclass
class SlurmOptions:
    partition: str | None = None
    gpus: int = 1  # per job
    cpus: int | None = None
    mem_gb: float | None = None
    time_min: int = 24 * 60
    array_parallelism: int = 256
    sbatch: dict[str, str] = field(default_factory=dict)  # further sbatch options, e.g. account, qos, constraint
    setup: list[str] = field(default_factory=list)  # shell lines run before each job (module load, ...)

    def executor_parameters(self, cluster: str) -> dict[str, Any]:
        """AutoExecutor parameters (submitit's generic names, ``slurm_`` for the Slurm-only ones)."""
        params: dict[str, Any] = {"name": "anchoropt-sweep", "timeout_min": int(self.time_min)}
        if cluster != "slurm":
            return params
        params["slurm_array_parallelism"] = self.array_parallelism
        if self.gpus:
            params["gpus_per_node"] = self.gpus
        if self.cpus is not None:
            params["cpus_per_task"] = self.cpus
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.sbatch:
            params["slurm_additional_parameters"] = dict(self.sbatch)
        if self.setup:
            params["slurm_setup"] = list(self.setup)
        return params


def waves(jobs: list[Job], pending: set[str]) -> list[list[Job]]:
    level: dict[str, int] = {}
    for job in jobs:  # dependencies come first
        if job.name in pending:
            level[job.name] = 1 + max((level[d] for d in job.deps if d in level), default=-1)
    out: list[list[Job]] = [[] for _ in range(1 + max(level.values(), default=-1))]
    for job in jobs:
        if job.name in level:
            out[level[job.name]].append(job)
    return out


def _outcome(job: Job, submitted: Any) -> Outcome:
    try:
        error = submitted.exception()
    except Exception as e:  # cancelled, timed out, or its result file is missing
        error = e
    if error is None:
        return Outcome(job, DONE)
    text = str(error)
    if NOT_RUN_MARK in text:
        return Outcome(job, BLOCKED, "not run: " + text.split(NOT_RUN_MARK, 1)[1].strip().splitlines()[0])
    lines = [line for line in text.splitlines() if line.strip()]
    mine = [line for line in lines if "JobFailed" in line]  # the job's own error, inside a remote traceback
    message = (mine or lines or [type(error).__name__])[-1].split("JobFailed: ", 1)[-1].strip()
    return Outcome(job, FAILED, message)


class SubmititLauncher:
    """``cluster``: "slurm", or "local" (submitit's local executor: the same jobs as processes here, wave after
    wave, at most ``array_parallelism`` at a time)."""

    def __init__(self, folder: Path | str, options: SlurmOptions, cluster: str = "slurm", log=print) -> None:
        self.folder = Path(folder)
        self.options = options
        self.cluster = cluster
        self.log = log

    def executor(self, dependency: str | None = None):
        import submitit

        try:
            executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        except RuntimeError as e:  # e.g. no srun here
            raise SweepError(f"cannot use submitit's {self.cluster} executor: {e}") from None
        params = self.options.executor_parameters(self.cluster)
        if dependency:
            params["slurm_dependency"] = dependency
        executor.update_parameters(**params)
        return executor

    def submit(self, jobs: list[Job], pending: set[str]) -> list[tuple[Job, Any]]:
        """Submit every wave at once, each wave after the previous one (Slurm); returns the submitted jobs."""
        by_name = {j.name: j for j in jobs}
        submitted: list[tuple[Job, Any]] = []
        previous: str | None = None
        for wave in waves(jobs, pending):
            executor = self.executor(f"afterany:{previous}" if previous else None)
            with executor.batch():
                handles = [executor.submit(run_job, j, tuple(by_name[d] for d in j.deps)) for j in wave]
            previous = handles[0].job_id.split("_")[0]
            self.log(f"[sweep] submitted {len(wave)} job(s) as Slurm job {previous}: {wave[0].name} ...")
            submitted.extend(zip(wave, handles))
        return submitted

    def run(self, jobs: list[Job], pending: set[str], wait: bool = True) -> list[Outcome] | None:
        outcomes = {j.name: Outcome(j, SKIPPED) for j in jobs if j.name not in pending}
        if self.cluster == "slurm":
            submitted = self.submit(jobs, pending)
            if not wait:
                return None
            for job, handle in submitted:
                while not handle.done():
                    time.sleep(30)
                outcomes[job.name] = _outcome(job, handle)
                self.log(f"[sweep] {outcomes[job.name].status} {job.name}")
        else:
            for wave in waves(jobs, pending):
                outcomes.update(self._run_here(wave, outcomes, {j.name: j for j in jobs}))
        return [outcomes[j.name] for j in jobs]

    def _run_here(self, wave: list[Job], outcomes: dict[str, Outcome], by_name: dict[str, Job]) -> dict[str, Outcome]:
        done: dict[str, Outcome] = {}
        todo = list(wave)
        running: list[tuple[Job, Any]] = []
        executor = self.executor()
        while todo or running:
            while todo and len(running) < self.options.array_parallelism:
                job = todo.pop(0)
                bad = [d for d in job.deps if outcomes[d].status in (FAILED, BLOCKED)]
                if bad:
                    done[job.name] = Outcome(job, BLOCKED, f"not run: {bad[0]} did not finish")
                    continue
                running.append((job, executor.submit(run_job, job, tuple(by_name[d] for d in job.deps))))
                self.log(f"[sweep] start {job.name} (log: {job.log})")
            for job, handle in list(running):
                if handle.done():
                    running.remove((job, handle))
                    done[job.name] = _outcome(job, handle)
                    self.log(f"[sweep] {done[job.name].status} {job.name}")
            if running:
                time.sleep(0.5)
        return done
