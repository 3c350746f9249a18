"""``anchoropt-toyworld build|pretrain|descriptions``: the generated toy world (images, captions, a tiny CLIP).

- ``build`` writes the world (weights + datasets) under ``--root`` (default ``$ANCHOROPT_TOYWORLD_ROOT`` or
  ``~/.cache/anchoropt/toyworld``) unless it is there already, and prints how to run the scripts on it.
- ``pretrain`` re-pretrains the tiny CLIP from the recipe (minutes of CPU); ``--save-committed`` replaces the
  compact weights shipped with the package.
- ``descriptions`` regenerates the CuPL-format description files of the world's datasets.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from anchoropt.cli.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="anchoropt-toyworld", description=__doc__.split("\n\n")[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the world (weights + datasets) if it is not built yet")
    b.add_argument(
        "--root", help="world cache folder (default: $ANCHOROPT_TOYWORLD_ROOT or ~/.cache/anchoropt/toyworld)"
    )
    b.add_argument("--images-per-class", type=int, default=None, help="training images per class (default 32)")
    b.add_argument(
        "--pretrain", action="store_true", help="pretrain the CLIP here instead of using the shipped weights"
    )
    t = sub.add_parser("pretrain", help="pretrain the tiny CLIP from the recipe")
    t.add_argument("--out", help="write the compact weights here")
    t.add_argument("--save-committed", action="store_true", help="replace the weights shipped with the package")
    t.add_argument(
        "--steps",
        type=int,
        help="a full schedule of this many steps instead of the recipe's (then not the recipe's weights)",
    )
    d = sub.add_parser("descriptions", help="regenerate the world's description files")
    d.add_argument("--out", default=None, help="folder (default: the repository's descriptions/)")
    return p


def main(argv: list[str] | None = None) -> int:
    import dataclasses

    from anchoropt.toyworld import world as tw
    from anchoropt.toyworld.pretrain import Recipe, pretrain

    args = build_parser().parse_args(argv)
    if args.command == "build":
        kwargs = {"images_per_class": args.images_per_class} if args.images_per_class else {}
        built = tw.build_world(args.root, force_pretrain=args.pretrain, **kwargs)
        print(f"toy world: {built.folder}")
        print(f"  DATA={built.data_root}")
        print(f"  options for every train.py / script call: {shlex.join(built.options())}")
        print(f"  e.g. DATA={built.data_root} bash scripts/base2new/train.sh toy_net 1 {shlex.join(built.options())}")
        return 0
    if args.command == "pretrain":
        import torch

        recipe = Recipe() if args.steps is None else dataclasses.replace(Recipe(), steps=args.steps, stop_step=0)
        # One thread: the shipped weights were made so, and float sums depend on the thread count.
        torch.set_num_threads(1)
        started = time.time()
        state = pretrain(recipe)
        print(f"pretrained in {time.time() - started:.0f}s")
        if args.save_committed:
            print(f"saved {tw.save_committed_weights(state, recipe)}")
        if args.out:
            print(f"saved {tw.save_committed_weights(state, recipe, Path(args.out))}")
        return 0
    from anchoropt.method.descriptions import DESCRIPTIONS_DIR

    for path in tw.write_descriptions(args.out or DESCRIPTIONS_DIR):
        print(f"wrote {path}")
    return 0


def console_main() -> None:
    sys.exit(run_cli(main)())


if __name__ == "__main__":
    console_main()
