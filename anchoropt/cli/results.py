"""``anchoropt-results OUTPUT_DIR [--paper] [--format text|markdown|csv|json] [--trainers ...] [--datasets ...]
[--backbone B]``.

Finds every ``results.json`` under OUTPUT_DIR and prints the base-to-novel,
cross-dataset and domain-generalisation tables, one side-by-side table per
protocol. Runs are grouped by trainer, backbone and config; a group whose
config differs from the shipped one is marked, with the differing keys in a
footnote, and two groups never share a cell. ``--trainers``, ``--datasets``
and ``--backbone`` select; ``--paper`` puts the published numbers beside the
ViT-B/16 16-shot groups only. Skipped files and ignored seeds are reported on
stderr, so stdout stays parseable.
"""

from __future__ import annotations

import argparse
import sys

from anchoropt.cli.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    from anchoropt.results.render import FORMATS
    from anchoropt.results.tables import DEFAULT_SEEDS

    p = argparse.ArgumentParser(
        prog="anchoropt-results",
        description="Tables of the protocol runs under OUTPUT_DIR (mean ± std over seeds; HM of the means).",
    )
    p.add_argument("output_dir", metavar="OUTPUT_DIR", help="folder searched recursively for results.json files")
    p.add_argument("--paper", action="store_true", help="show the published numbers and the difference beside each row")
    p.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=list(DEFAULT_SEEDS),
        help="seeds every cell should have (default: 1 2 3); results of other seeds are ignored",
    )
    p.add_argument("--trainers", nargs="+", default=[], metavar="TRAINER", help="only these trainers")
    p.add_argument(
        "--datasets",
        nargs="+",
        default=[],
        metavar="DATASET",
        help="only these datasets (oxford_pets or OxfordPets); transfer tables keep their ImageNet source",
    )
    p.add_argument(
        "--backbone",
        default="",
        help="only runs on this backbone, as the tables label it (ViT-B/16; a file that is not an OpenAI release: "
        "<file name>@<sha256 prefix>)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    return p


def main(argv: list[str] | None = None) -> int:
    from anchoropt.results.render import render
    from anchoropt.results.tables import load_report

    args = build_parser().parse_args(argv)
    report = load_report(args.output_dir, args.seeds, args.trainers, args.datasets, args.backbone)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if report.empty:
        print(f"No results to tabulate under {args.output_dir}", file=sys.stderr)
        return 1
    sys.stdout.write(render(report, args.format, args.paper))
    return 0


def console_main() -> None:
    sys.exit(run_cli(main)())


if __name__ == "__main__":
    console_main()
