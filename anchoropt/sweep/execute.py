"""Running one job: its script, its output appended to the job's log, and what became of it."""

from __future__ import annotations

import datetime
import os
import subprocess
from dataclasses import dataclass

from anchoropt.sweep.plan import Job, probe

DONE, SKIPPED, FAILED, BLOCKED = "done", "skipped", "failed", "blocked"
# Written into a job's error so a launcher that only sees the error's text can tell "not run" from "failed".
NOT_RUN_MARK = "[not run]"


@dataclass
class Outcome:
    job: Job
    status: str  # DONE, SKIPPED, FAILED or BLOCKED
    message: str = ""


class JobFailed(RuntimeError):
    """A job's script exited non-zero (its log says why)."""


def start(job: Job, own_session: bool = False, **env: str) -> subprocess.Popen:
    """Start the job's script, output appended to its log after a header line; ``own_session``: in a process
    group of its own (the local launcher stops a job with its train.py by signalling that group)."""
    os.makedirs(os.path.dirname(job.log), exist_ok=True)
    with open(job.log, "a") as log:
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        log.write(f"==== {stamp} {job.shell_line()}\n")
        log.flush()
        return subprocess.Popen(
            job.command(),
            env=job.environ(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=own_session,
        )


def failure_message(job: Job, returncode: int) -> str:
    """The job's status and the last line its script printed (the error line of a refused run)."""
    last = ""
    try:
        with open(job.log, errors="replace") as f:
            lines = [line.strip() for line in f.read().splitlines()[-50:] if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        last = (errors or lines or [""])[-1]
    except OSError:
        pass
    status = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
    return f"{status}{': ' + last if last else ''}"


def run_job(job: Job, deps: tuple[Job, ...] = ()) -> str:
    """Run ``job`` to its end (what a submitit worker calls); raise ``JobFailed`` when it failed or when one of
    ``deps`` did not finish (a cluster may start a job after a failed dependency; its script must not run)."""
    for dep in deps:
        if not probe(dep, check=False).finished:  # the dependency's own run checked its settings
            raise JobFailed(f"{NOT_RUN_MARK} {dep.name} did not finish (log: {dep.log})")
    returncode = start(job).wait()
    if returncode != 0:
        raise JobFailed(f"{failure_message(job, returncode)} (log: {job.log})")
    return job.name
