"""The local launcher: N jobs at once on this machine, one per GPU (``CUDA_VISIBLE_DEVICES``) or per CPU worker."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading

from anchoropt.sweep.execute import BLOCKED, DONE, FAILED, SKIPPED, Outcome, failure_message, start
from anchoropt.sweep.plan import Job


def cpu_threads(workers: int) -> str:
    """Threads per CPU worker, so that N workers share the cores instead of each taking all of them."""
    return str(max(1, (os.cpu_count() or 1) // workers))


class LocalLauncher:
    """Runs the pending jobs, each once its dependencies are done, on ``slots``: GPU ids (one job per device)
    or, when ``devices`` is empty, ``workers`` CPU workers."""

    def __init__(self, workers: int = 1, devices: list[str] | None = None, log=print) -> None:
        self.devices = list(devices or [])
        self.slots: list[str | None] = list(self.devices) if self.devices else [None] * max(1, workers)
        self.log = log

    def _env(self, slot: str | None) -> dict[str, str]:
        if slot is not None:
            return {"CUDA_VISIBLE_DEVICES": slot}
        env = {"CUDA_VISIBLE_DEVICES": ""}  # CPU workers: never share a GPU by accident
        if "OMP_NUM_THREADS" not in os.environ:
            env["OMP_NUM_THREADS"] = cpu_threads(len(self.slots))
        return env

    def run(self, jobs: list[Job], pending: set[str]) -> list[Outcome]:
        outcomes: dict[str, Outcome] = {j.name: Outcome(j, SKIPPED) for j in jobs if j.name not in pending}
        waiting = [j for j in jobs if j.name in pending]
        free = list(self.slots)
        running: dict[str, tuple[subprocess.Popen, str | None]] = {}
        finished: queue.Queue = queue.Queue()

        def wait_for(name: str, proc: subprocess.Popen) -> None:
            finished.put((name, proc.wait()))

        try:
            while waiting or running:
                stuck = list(waiting)
                for job in list(waiting):
                    states = [outcomes[d].status if d in outcomes else None for d in job.deps]
                    if any(s in (FAILED, BLOCKED) for s in states):
                        bad = next(d for d, s in zip(job.deps, states) if s in (FAILED, BLOCKED))
                        outcomes[job.name] = Outcome(job, BLOCKED, f"not run: {bad} did not finish")
                        waiting.remove(job)
                    elif free and all(s in (DONE, SKIPPED) for s in states):
                        slot = free.pop(0)
                        where = f" on GPU {slot}" if slot is not None else ""
                        self.log(f"[sweep] start {job.name}{where} (log: {job.log})")
                        proc = start(job, own_session=True, **self._env(slot))
                        running[job.name] = (proc, slot)
                        threading.Thread(target=wait_for, args=(job.name, proc), daemon=True).start()
                        waiting.remove(job)
                if not running:
                    if waiting == stuck:  # nothing running, nothing could start: a dependency outside the plan
                        raise RuntimeError(f"jobs wait for jobs not in the sweep: {[j.name for j in waiting]}")
                    continue
                name, returncode = finished.get()
                _, slot = running.pop(name)
                free.append(slot)
                job = next(j for j in jobs if j.name == name)
                if returncode == 0:
                    outcomes[name] = Outcome(job, DONE)
                    self.log(f"[sweep] done  {name}")
                else:
                    outcomes[name] = Outcome(job, FAILED, failure_message(job, returncode))
                    self.log(f"[sweep] FAILED {name}: {outcomes[name].message} (log: {job.log})")
        except KeyboardInterrupt:
            for name, (proc, _) in running.items():
                print(f"[sweep] stopping {name}", file=sys.stderr)
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            for proc, _ in running.values():
                proc.wait()
            raise
        return [outcomes[j.name] for j in jobs]
