"""The plan a dry run prints and the summary a sweep ends with."""

from __future__ import annotations

from typing import TextIO

from anchoropt.sweep.execute import BLOCKED, DONE, FAILED, SKIPPED, Outcome
from anchoropt.sweep.plan import Job, Probe


def print_plan(jobs: list[Job], probes: dict[str, Probe], pending: set[str], out: TextIO) -> None:
    """Every job with its script call; under each job that can start now, the train.py commands its script
    would run; finished jobs are marked as skipped."""
    todo = [j for j in jobs if j.name in pending]
    print(f"Plan: {len(jobs)} jobs, {len(todo)} to run, {len(jobs) - len(todo)} finished before (skipped)", file=out)
    for job in jobs:
        if job.name not in pending:
            print(f"skip  {job.name}", file=out)
            continue
        print(f"run   {job.name}", file=out)
        print(f"      $ {job.shell_line()}", file=out)
        waits = [d for d in job.deps if d in pending]
        probe = probes[job.name]
        if waits:
            print(f"      after: {', '.join(waits)}", file=out)
        elif probe.error:
            print(f"      the script refuses: {probe.error}", file=out)
        else:
            for command in probe.commands:
                print(f"      + {command}", file=out)


def print_summary(outcomes: list[Outcome], out: TextIO) -> None:
    count = {s: sum(o.status == s for o in outcomes) for s in (DONE, SKIPPED, FAILED, BLOCKED)}
    print(
        f"Sweep: {len(outcomes)} jobs: {count[DONE]} done, {count[SKIPPED]} skipped (finished before), "
        f"{count[FAILED]} failed, {count[BLOCKED]} not run (a dependency failed)",
        file=out,
    )
    for outcome in outcomes:
        if outcome.status == FAILED:
            print(f"failed:  {outcome.job.name}: {outcome.message}\n         log: {outcome.job.log}", file=out)
    for outcome in outcomes:
        if outcome.status == BLOCKED:
            print(f"not run: {outcome.job.name}: {outcome.message}", file=out)
