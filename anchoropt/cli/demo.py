"""``anchoropt-demo``: AnchorOPT doing something real on a laptop CPU, through the protocol scripts.

Builds the toy world when it is not cached (a tiny CLIP pretrained on generated shapes; see README, Toy world),
then runs zero-shot CLIP, CoOp and CoOp_AnchorOPT (Stage I anchor from descriptions, Stage II on the base classes)
base-to-novel on one world dataset with one seed through ``scripts/base2new/{train,test}.sh``, prints the
``anchoropt-results`` table and writes the learned position matrix as a heatmap.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from anchoropt.cli.errors import run_cli

TRAINERS = ("ZeroshotCLIP", "CoOp", "CoOp_AnchorOPT")


def build_parser() -> argparse.ArgumentParser:
    from anchoropt.toyworld import spec

    p = argparse.ArgumentParser(prog="anchoropt-demo", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--dataset",
        default="toy_net",
        choices=[d.config for d in spec.BASE2NEW_DATASETS],
        help="world dataset (default: toy_net, 64 classes: 32 base / 32 novel)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--root", help="world cache folder (default: $ANCHOROPT_TOYWORLD_ROOT or ~/.cache/anchoropt/toyworld)"
    )
    p.add_argument("--output", default="output/toyworld_demo", help="run folder (default: output/toyworld_demo)")
    p.add_argument(
        "--images-per-class",
        type=int,
        default=None,
        help="training images per class of a world built here (default: the world's own, 32; fewer is faster)",
    )
    p.add_argument("--trainers", nargs="+", default=list(TRAINERS), help=f"default: {' '.join(TRAINERS)}")
    p.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    return p


def main(argv: list[str] | None = None) -> int:
    from anchoropt.cli import results
    from anchoropt.errors import UserError
    from anchoropt.toyworld.protocol import run_script
    from anchoropt.toyworld.world import DEFAULT_IMAGES_PER_CLASS, build_world

    args = build_parser().parse_args(argv)
    started = time.time()
    world = build_world(args.root, images_per_class=args.images_per_class or DEFAULT_IMAGES_PER_CLASS)
    print(f"[demo] world ready ({time.time() - started:.0f}s): {world.folder}", flush=True)
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    log = output / "demo_log.txt"
    for trainer in args.trainers:
        step = time.time()
        print(f"[demo] {trainer}: base2new/train.sh + test.sh {args.dataset} {args.seed} (log: {log})", flush=True)
        try:
            for script in ("base2new/train.sh", "base2new/test.sh"):
                run_script(script, [args.dataset, str(args.seed)], world, trainer, output, log_file=log)
        except subprocess.CalledProcessError as exc:
            raise UserError(f"{trainer} failed (exit code {exc.returncode}); see the end of {log}") from exc
        print(f"[demo] {trainer} done in {time.time() - step:.0f}s", flush=True)
    print(flush=True)
    # Only the world dataset run here: the real datasets' rows would all read "not run".
    results.main([str(output), "--seeds", str(args.seed), "--datasets", args.dataset])
    heatmaps = sorted(output.glob(f"base2new/train_base/{args.dataset}/*/*_AnchorOPT/*/seed{args.seed}/positions.png"))
    for png in heatmaps:
        print(f"\n[demo] learned position matrix (heatmap): {png}")
        text = png.with_suffix(".txt")
        if text.is_file():
            print(text.read_text().rstrip())
    print(f"\n[demo] total {time.time() - started:.0f}s; runs, logs and results.json files under {output}")
    return 0


def console_main() -> None:
    sys.exit(run_cli(main)())


if __name__ == "__main__":
    console_main()
