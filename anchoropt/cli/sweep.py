"""``anchoropt-sweep``: the protocol scripts for many trainers, datasets, seeds and shots, as parallel jobs.

    anchoropt-sweep --protocol base2new --trainers CoOp CoOp_AnchorOPT --seeds 1 2 3 --workers 2 \\
        -- MODEL.BACKBONE.PATH /path/ViT-B-16.pt
    anchoropt-sweep --protocol base2new --trainers CoOp_AnchorOPT --seeds 1 2 3 \\
        --launcher slurm --partition gpu --gpus 1 --cpus 8 --mem-gb 32 --time 240

Each job is one call of a protocol script (scripts/base2new/train.sh DATASET SEED ...); Stage I runs once per
dataset, seed and shots as its own job before the Stage II trainings that share it; evaluations follow their
training. Finished runs are skipped (the scripts' DRY_RUN mode says what is left), so rerunning the same sweep
after a crash or a cancelled job runs only what is missing. Ends with a summary and the results table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from anchoropt.cli.errors import run_cli


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    from anchoropt.sweep.plan import PROTOCOLS

    p = argparse.ArgumentParser(
        prog="anchoropt-sweep",
        description="Run the protocol scripts for every trainer x dataset x seed x shots, in parallel, "
        "skipping finished runs. Extra train.py KEY VALUE options go after '--'.",
    )
    p.add_argument("--protocol", nargs="+", choices=PROTOCOLS, required=True, help="one or more protocols")
    p.add_argument("--trainers", nargs="+", required=True, help="e.g. CoOp CoOp_AnchorOPT")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="default: 1 2 3")
    p.add_argument("--datasets", nargs="+", help="default: every dataset of the protocol (as the scripts list them)")
    p.add_argument("--shots", nargs="+", type=int, default=[16], help="shots per class (default: 16)")
    p.add_argument("--data", default=os.environ.get("DATA", ""), help="dataset root (default: $DATA)")
    p.add_argument(
        "--output", default=os.environ.get("OUTPUT", ""), help="output root (default: $OUTPUT, else <repo>/output)"
    )
    p.add_argument("--cfg", nargs="+", type=key_value, default=[], metavar="TRAINER=CFG", help="a trainer's config")
    p.add_argument("--stage1-cfg", help="Stage I config name (the scripts' STAGE1_CFG)")
    p.add_argument("--stage1-opts", help='KEY VALUE options for Stage I only, e.g. "OPTIM.MAX_EPOCH 5"')
    p.add_argument("--env", nargs="+", type=key_value, default=[], metavar="KEY=VALUE", help="more script variables")

    p.add_argument("--launcher", choices=("local", "slurm", "submitit-local"), default="local")
    local = p.add_argument_group("local launcher")
    local.add_argument(
        "--devices",
        default="auto",
        help="GPU ids, one job per device (e.g. 0,1,2,3); 'auto': every GPU nvidia-smi lists; 'cpu': none",
    )
    local.add_argument("--workers", type=int, default=1, help="jobs at once on the CPU (no GPU); default 1")
    slurm = p.add_argument_group("slurm launcher (submitit)")
    slurm.add_argument("--partition")
    slurm.add_argument("--gpus", type=int, default=1, help="GPUs per job (default 1)")
    slurm.add_argument("--cpus", type=int, help="CPUs per job")
    slurm.add_argument("--mem-gb", type=float, help="memory per job")
    slurm.add_argument("--time", type=int, default=24 * 60, help="time limit per job in minutes (default 1440)")
    slurm.add_argument("--array-parallelism", type=int, default=256, help="jobs of one array running at once")
    slurm.add_argument(
        "--sbatch", nargs="+", type=key_value, default=[], metavar="KEY=VALUE", help="more sbatch options (account=x)"
    )
    slurm.add_argument("--setup", nargs="+", default=[], metavar="LINE", help="shell lines run before each job")
    slurm.add_argument("--no-wait", action="store_true", help="submit and exit (no summary or table)")

    p.add_argument("--dry-run", action="store_true", help="print the plan only")
    p.add_argument("--no-table", action="store_true", help="do not print the results table at the end")
    p.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    return p


def split_extra(argv: list[str]) -> tuple[list[str], list[str]]:
    """The sweep's own arguments, and the train.py KEY VALUE options after ``--``."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def detect_gpus(devices: str) -> list[str]:
    if devices == "cpu":
        return []
    if devices != "auto":
        return [d.strip() for d in devices.split(",") if d.strip()]
    if not shutil.which("nvidia-smi"):
        return []
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
    return [str(i) for i, line in enumerate(listed.splitlines()) if line.startswith("GPU ")]


def main(argv: list[str] | None = None) -> int:
    from anchoropt.sweep.execute import BLOCKED, FAILED
    from anchoropt.sweep.local import LocalLauncher
    from anchoropt.sweep.plan import REPO, SweepSpec, build_plan, pending_jobs, probe_all
    from anchoropt.sweep.report import print_plan, print_summary
    from anchoropt.sweep.slurm import SlurmOptions, SubmititLauncher

    own, extra = split_extra(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(own)
    env = dict(args.env)
    if args.stage1_cfg:
        env["STAGE1_CFG"] = args.stage1_cfg
    if args.stage1_opts is not None:
        env["STAGE1_OPTS"] = args.stage1_opts
    spec = SweepSpec(
        protocols=list(dict.fromkeys(args.protocol)),
        trainers=list(dict.fromkeys(args.trainers)),
        seeds=list(dict.fromkeys(args.seeds)),
        datasets=args.datasets,
        shots=list(dict.fromkeys(args.shots)),
        data=args.data,
        output=args.output or str(REPO / "output"),
        opts=extra,
        cfgs=dict(args.cfg),
        env=env,
    )
    jobs = build_plan(spec)
    probes = probe_all(jobs)
    pending = pending_jobs(jobs, probes)
    if args.dry_run:
        print_plan(jobs, probes, pending, sys.stdout)
        return 0
    print(f"[sweep] {len(jobs)} jobs, {len(pending)} to run; logs in {spec.log_dir}", flush=True)

    def log(line: str) -> None:
        print(line, flush=True)

    if args.launcher == "local":
        gpus = detect_gpus(args.devices)
        outcomes = LocalLauncher(args.workers, gpus, log=log).run(jobs, pending)
    else:
        options = SlurmOptions(
            partition=args.partition,
            gpus=args.gpus,
            cpus=args.cpus,
            mem_gb=args.mem_gb,
            time_min=args.time,
            array_parallelism=args.array_parallelism,
            sbatch=dict(args.sbatch),
            setup=args.setup,
        )
        cluster = "slurm" if args.launcher == "slurm" else "local"
        launcher = SubmititLauncher(spec.log_dir / "submitit", options, cluster, log=log)
        outcomes = launcher.run(jobs, pending, wait=not args.no_wait)
        if outcomes is None:
            print("[sweep] submitted; run the same command again once the jobs ended for the summary and table")
            return 0
    print_summary(outcomes, sys.stdout)
    if not args.no_table:
        print_table(spec.output, spec.seeds)
    return 1 if any(o.status in (FAILED, BLOCKED) for o in outcomes) else 0


def print_table(output: str, seeds: list[int]) -> None:
    from anchoropt.cli.results import main as results_main

    print(f"\nResults (anchoropt-results {output} --seeds {' '.join(map(str, seeds))}):", flush=True)
    results_main([output, "--seeds", *map(str, seeds)])


def console_main() -> None:
    sys.exit(run_cli(main)())


if __name__ == "__main__":
    console_main()
