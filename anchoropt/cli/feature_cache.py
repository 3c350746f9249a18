"""``anchoropt-feature-cache [--dir DIR] list|prune``: the on-disk cache of frozen image features.

``list`` prints every entry (dataset, split, images, backbone, precision, size, last use) and the
total size. ``prune`` deletes entries: all of them (``--all``), those unused for ``--unused-days``
days, the least recently used until the cache fits ``--max-size``, and always the unusable ones a
crash left (never an entry a running job is filling). ``--dry-run`` only says what would go.
DIR defaults to ``$ANCHOROPT_FEATURE_CACHE``, else ``~/.cache/anchoropt/features`` (a run's
``FEATURE_CACHE.DIR`` overrides it for that run).
"""

from __future__ import annotations

import argparse
import re
import sys
import time

from anchoropt.cli.errors import run_cli
from anchoropt.errors import ConfigError
from anchoropt.features.store import CacheEntry, FeatureStore, default_cache_root, format_size, tree_size

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'500M', '2G', '1.5GiB', '1024' (bytes) -> bytes (binary units)."""
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(f"--max-size {text!r}: expected a size such as 500M, 2G or 1.5GiB")
    power = " kmgt".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * 1024**power)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="anchoropt-feature-cache", description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default="", help="cache root (default: $ANCHOROPT_FEATURE_CACHE or ~/.cache/...)")
    p.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the entries and their sizes")
    prune = sub.add_parser("prune", help="delete entries")
    prune.add_argument("--all", action="store_true", help="delete every entry")
    prune.add_argument("--unused-days", type=float, default=None, help="delete entries unused for this many days")
    prune.add_argument("--max-size", default="", help="then delete the least recently used until the cache fits")
    prune.add_argument("--dry-run", action="store_true", help="only print what would be deleted")
    return p


def describe(entry: CacheEntry) -> list[str]:
    meta = entry.meta
    used = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used))
    precision = (meta.get("identity") or {}).get("precision") or {}
    return [
        entry.key[:12],
        str(meta.get("dataset", "?")),
        f"{meta.get('split', '?')}/{meta.get('subsample_classes', '?')}",
        f"{meta.get('num_images', '?')} x {meta.get('dim', '?')}",
        str(meta.get("backbone", "?")),
        f"{precision.get('prec', '?')} {precision.get('device', '')}".strip(),
        format_size(entry.size_bytes),
        used,
    ]


def list_entries(store: FeatureStore) -> None:
    entries = store.entries()
    header = ["key", "dataset", "split", "features", "backbone", "precision", "size", "last used"]
    rows = [header] + [describe(entry) for entry in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    total = sum(entry.size_bytes for entry in entries)
    unusable = store.unusable()
    note = f"; {len(unusable)} unusable (pruned by 'prune')" if unusable else ""
    print(f"{len(entries)} entries, {format_size(total)} in {store.root}{note}")


def entries_to_prune(
    entries: list[CacheEntry], everything: bool, unused_days: float | None, max_size: int | None, now: float
) -> list[CacheEntry]:
    """Which of `entries` (most recently used first) go."""
    if everything:
        return list(entries)
    doomed = []
    kept_bytes = 0
    for entry in entries:
        stale = unused_days is not None and now - entry.last_used > unused_days * 86400
        too_big = max_size is not None and kept_bytes + entry.size_bytes > max_size
        if stale or too_big:
            doomed.append(entry)
        else:
            kept_bytes += entry.size_bytes
    return doomed


def prune_entries(store: FeatureStore, args: argparse.Namespace) -> None:
    max_size = parse_size(args.max_size) if args.max_size else None
    if args.unused_days is not None and args.unused_days < 0:
        raise ConfigError(f"--unused-days must be >= 0, got {args.unused_days}")
    entries = store.entries()
    doomed = [e.directory for e in entries_to_prune(entries, args.all, args.unused_days, max_size, time.time())]
    doomed += store.unusable()
    freed = 0
    for directory in doomed:
        freed += tree_size(directory) if args.dry_run else store.remove(directory)
        print(f"{'would delete' if args.dry_run else 'deleted'} {directory}")
    remaining = [e for e in entries if e.directory not in doomed]
    print(
        f"{'would delete' if args.dry_run else 'deleted'} {len(doomed)} entries ({format_size(freed)}); "
        f"{len(remaining)} entries ({format_size(sum(e.size_bytes for e in remaining))}) remain in {store.root}"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    store = FeatureStore(args.dir or default_cache_root())
    if args.command == "list":
        list_entries(store)
    else:
        prune_entries(store, args)
    return 0


def console_main() -> None:
    sys.exit(run_cli(main)())


if __name__ == "__main__":
    console_main()
