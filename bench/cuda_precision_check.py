"""On a CUDA machine: the CUDA-marked tests and the benchmark in fp16 and bf16, in one JSON file.

    PYTHONPATH=. python -m bench.cuda_precision_check                  # quick benchmark cases
    PYTHONPATH=. python -m bench.cuda_precision_check --full           # the full benchmark set
    PYTHONPATH=. python -m bench.cuda_precision_check --output out.json

Runs ``pytest -m cuda`` (every (trainer, precision) train.py run of tests/test_precision.py on the
GPU, the GradScaler test, ...), then ``bench.run_all --device cuda --prec P`` for P in fp16 and bf16,
each in its own process, and writes the machine, the test outcomes and both benchmark reports to
one file (default ``bench/results/cuda-precision-<time>.json``). Exit code 0 when every CUDA test
passed (none skipped) and every benchmark case produced a ratio; 1 otherwise; 2 without a GPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from typing import Any

import torch

from bench.common import machine_description
from bench.run_all import RESULTS_DIR, git_commit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRECISIONS = ("fp16", "bf16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the full benchmark set instead of the quick cases")
    parser.add_argument("--device", default="cuda", help="the CUDA device to benchmark (default cuda)")
    parser.add_argument("--output", help="JSON file (default bench/results/cuda-precision-<time>.json)")
    parser.add_argument("--skip-tests", action="store_true", help="only the benchmark")
    parser.add_argument("--skip-bench", action="store_true", help="only the tests")
    return parser.parse_args(argv)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def junit_outcomes(path: str) -> list[dict[str, Any]]:
    """One ``{"test", "outcome", "seconds", "message"}`` per test case of a pytest JUnit XML file."""
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcome, message = {"failure": "failed"}.get(kind, kind), (found.get("message") or "")[:2000]
                break
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        cases.append({"test": name, "outcome": outcome, "seconds": float(case.get("time", 0)), "message": message})
    return cases


def run_cuda_tests(workdir: str) -> dict[str, Any]:
    xml = os.path.join(workdir, "cuda-tests.xml")
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True)
    cases = junit_outcomes(xml) if os.path.exists(xml) else []
    counts = {kind: sum(c["outcome"] == kind for c in cases) for kind in ("passed", "failed", "error", "skipped")}
    return {
        "command": " ".join(cmd[1:]),
        "returncode": proc.returncode,
        "seconds": time.perf_counter() - start,
        "counts": counts,
        "ok": proc.returncode == 0 and counts["passed"] > 0 and counts["skipped"] == 0,
        "cases": cases,
        "output_tail": (proc.stdout + proc.stderr)[-4000:],
    }


def run_benchmark(prec: str, device: str, full: bool, workdir: str) -> dict[str, Any]:
    out = os.path.join(workdir, f"bench-{prec}.json")
    cmd = [sys.executable, "-m", "bench.run_all", "--device", device, "--prec", prec, "--output", out]
    cmd += [] if full else ["--quick"]
    proc = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True)
    report = json.load(open(out)) if os.path.exists(out) else None
    records = (report or {}).get("records", [])
    used = {r[path]["precision"]["used"] for r in records for path in ("ours", "reference") if "precision" in r[path]}
    return {
        "command": " ".join(cmd[1:]),
        "returncode": proc.returncode,
        # every case measured on both paths, in the precision asked for (not a fallback)
        "ok": proc.returncode == 0 and bool(records) and used == {prec},
        "precision_used": sorted(used),
        "report": report,
        "output_tail": (proc.stdout + proc.stderr)[-4000:],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("error: no CUDA device: this check runs the CUDA-marked tests and benchmarks on a GPU", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    output = args.output or os.path.join(RESULTS_DIR, f"cuda-precision-{stamp}.json")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    result: dict[str, Any] = {
        "command": "python -m bench.cuda_precision_check" + (" " + " ".join(argv) if argv else ""),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": machine_description(device),
        "bf16_supported": torch.cuda.is_bf16_supported(including_emulation=False),
    }
    with tempfile.TemporaryDirectory() as workdir:
        if not args.skip_tests:
            print("CUDA-marked tests ...", flush=True)
            result["tests"] = run_cuda_tests(workdir)
            print(f"  {result['tests']['counts']}", flush=True)
        if not args.skip_bench:
            result["benchmarks"] = {}
            for prec in PRECISIONS:
                print(f"benchmark in {prec} ...", flush=True)
                result["benchmarks"][prec] = run_benchmark(prec, args.device, args.full, workdir)
                print(f"  ok: {result['benchmarks'][prec]['ok']}", flush=True)
    parts = [result.get("tests", {}).get("ok", True)] + [b["ok"] for b in result.get("benchmarks", {}).values()]
    result["ok"] = all(parts)
    with open(output, "w") as handle:
        json.dump(result, handle, indent=1)
    print(f"{'all passed' if result['ok'] else 'FAILURES'}; results: {output}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
