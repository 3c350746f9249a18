"""Accuracy benchmark on the toy world: every trainer with and without AnchorOPT through the protocol scripts.

    PYTHONPATH=. python -m bench.toyworld                                  # everything (hours on 2 CPU cores)
    PYTHONPATH=. python -m bench.toyworld --datasets toy_net --seeds 1     # what fits a shorter budget

Runs ``scripts/base2new/{train,test}.sh`` for each trainer x dataset x seed, then (``--protocols``)
``scripts/cross_dataset/*`` and ``scripts/domain_generalization/test.sh`` with ToyNet as the source, and
writes the ``anchoropt-results`` tables (markdown) to ``bench/results/toyworld-<time>.md``. A finished run is
never redone (the scripts skip it), so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import subprocess
import time
from pathlib import Path

from anchoropt.cli import results
from anchoropt.toyworld import spec
from anchoropt.toyworld.protocol import run_script
from anchoropt.toyworld.world import build_world

TRAINERS = (
    "ZeroshotCLIP",
    "CoOp",
    "CoOp_AnchorOPT",
    "CoCoOp",
    "CoCoOp_AnchorOPT",
    "MaPLe",
    "MaPLe_AnchorOPT",
    "DePT",
    "DePT_AnchorOPT",
)
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.toyworld", description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=[d.config for d in spec.BASE2NEW_DATASETS])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--trainers", nargs="+", default=list(TRAINERS))
    p.add_argument(
        "--protocols",
        nargs="+",
        default=["base2new", "cross_dataset"],
        help="base2new and/or cross_dataset (cross_dataset includes domain generalisation)",
    )
    p.add_argument("--root", help="world cache folder")
    p.add_argument("--output", default="output/toyworld_bench", help="run folder (finished runs are reused)")
    args = p.parse_args(argv)
    world = build_world(args.root)
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    log = output / "bench_log.txt"
    failures = []

    def run(script: str, script_args: list[str], trainer: str) -> None:
        started = time.time()
        try:
            run_script(script, script_args, world, trainer, output, log_file=log)
            print(f"{trainer:18s} {script} {' '.join(script_args)}: {time.time() - started:.0f}s", flush=True)
        except subprocess.CalledProcessError:
            failures.append(f"{trainer} {script} {' '.join(script_args)}")
            print(f"{trainer:18s} {script} {' '.join(script_args)}: FAILED (see {log})", flush=True)

    for seed in args.seeds:
        for trainer in args.trainers:
            if "base2new" in args.protocols:
                for dataset in args.datasets:
                    for script in ("base2new/train.sh", "base2new/test.sh"):
                        run(script, [dataset, str(seed)], trainer)
            if "cross_dataset" in args.protocols:
                run("cross_dataset/train.sh", [str(seed)], trainer)
                for target in spec.TARGETS:
                    run("cross_dataset/test.sh", [target.config, str(seed)], trainer)
                for variant in spec.VARIANTS:
                    run("domain_generalization/test.sh", [variant.config, str(seed)], trainer)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        # Base-to-novel alone: its table (rows and average) is over the datasets run, not the world's four.
        narrow = ["--datasets", *args.datasets] if args.protocols == ["base2new"] else []
        results.main([str(output), "--seeds", *map(str, args.seeds), "--format", "markdown", *narrow])
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = RESULTS_DIR / f"toyworld-{stamp}.md"
    out.write_text(buf.getvalue())
    print(buf.getvalue())
    print(f"tables written to {out}" + (f"; failed: {failures}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
