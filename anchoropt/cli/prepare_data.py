"""``anchoropt-prepare-data``: check a data root and fetch CoOp's split files.

    anchoropt-prepare-data --root DATA                      # what is present / missing, per dataset
    anchoropt-prepare-data --root DATA --download-splits    # also fetch split_zhou_*.json, classnames.txt, ...
    anchoropt-prepare-data --root DATA --datasets oxford_pets imagenet

Exit status: 0 when every checked dataset is ready (without --datasets:
every dataset whose folder exists), 1 otherwise, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys

from tabulate import tabulate

from anchoropt.cli.errors import run_cli
from anchoropt.datasets.catalog import CATALOG, DATASET_NAMES, lookup
from anchoropt.datasets.preparation import DatasetReport, FileOutcome, check_dataset, fetch_hosted_files
from anchoropt.errors import DataError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="anchoropt-prepare-data",
        description="Check a data root laid out as CoOp's DATASETS.md describes, and fetch the split files CoOp "
        "hosts on Google Drive.",
    )
    p.add_argument("--root", required=True, help="the data root (DATASET.ROOT / train.py --root)")
    p.add_argument(
        "--datasets",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"datasets to check: registry, config or folder names (default: all {len(DATASET_NAMES)})",
    )
    p.add_argument(
        "--download-splits",
        action="store_true",
        help="download the split_zhou_*.json files and the class-name files (classnames.txt, "
        "cat_to_name.json) that are missing; each is verified before it is written",
    )
    p.add_argument("--force", action="store_true", help="with --download-splits: replace files that are present")
    p.add_argument(
        "--no-load",
        action="store_true",
        help="only look for files and folders; do not build each dataset as training would",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return p


def _short(path: str, base: str) -> str:
    """``path`` relative to ``base`` when inside it (a folder keeps its trailing slash)."""
    if not path.startswith(base.rstrip(os.sep) + os.sep):
        return path
    return os.path.relpath(path, base) + ("/" if path.endswith(os.sep) else "")


def format_downloads(outcomes: list[FileOutcome], root: str) -> str:
    rows = [[o.dataset, _short(o.path, root), o.status, o.detail] for o in outcomes]
    return tabulate(rows, headers=["Dataset", "File", "Result", "Detail"])


def format_report(reports: list[DatasetReport], root: str, detail_not_found: bool = True) -> str:
    """A table (one row per dataset) followed by what is missing, with full paths and sources.

    ``detail_not_found=False`` leaves datasets whose folder is absent to the table.
    """
    rows = []
    for r in reports:
        missing = [_short(path, root if path.rstrip(os.sep) == r.folder else r.folder) for path, _ in r.missing]
        rows.append(
            [r.name, r.status, ", ".join(r.present) or "-", ", ".join(missing) or "-", r.classes or "-", r.sizes or "-"]
        )
    lines = [tabulate(rows, headers=["Dataset", "Status", "Present", "Missing", "Classes", "Images"])]
    for r in reports:
        if r.ready or (r.status == "not found" and not detail_not_found):
            continue
        lines.append("")
        lines.append(f"{r.name} ({r.status}):")
        lines += [f"  missing: {path}  <- {where}" for path, where in r.missing]
        lines += [f"  note: {note}" for note in r.notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = os.path.abspath(os.path.expanduser(args.root))
    if not os.path.isdir(root):
        raise DataError(
            f"data root not found: {root} (expected a folder holding the dataset folders, e.g. "
            f"{os.path.join(root, 'oxford_pets')}/)"
        )
    explicit = args.datasets is not None
    names = list(dict.fromkeys(lookup(n).name for n in args.datasets)) if explicit else list(DATASET_NAMES)

    failed_downloads = False
    if args.download_splits:
        outcomes = fetch_hosted_files(root, names, explicit=explicit, force=args.force)
        if outcomes:
            print(format_downloads(outcomes, root))
            print()
        failed_downloads = any(o.status == "failed" for o in outcomes)

    reports = [check_dataset(root, CATALOG[name], load=not args.no_load) for name in names]
    print(f"Data root: {root}")
    print(format_report(reports, root, detail_not_found=explicit))

    considered = [r for r in reports if explicit or r.status != "not found"]
    if not considered:
        print(f"\nNo dataset folders found under {root}; see CoOp's DATASETS.md for the layout.")
        return 1
    return 0 if all(r.ready for r in considered) and not failed_downloads else 1


def console_main() -> None:
    sys.exit(run_cli(main)())
