"""``anchoropt-positions MODEL_DIR [--out file.png]``: the learned position matrix of a Stage II checkpoint.

Renders the matrix as a heatmap PNG (rows = prompt slots, columns = V1..VM, A1..AN; the
paper's Figure 4) and prints the chosen order and the matrices. MODEL_DIR is the output
directory of an AnchorOPT Stage II run, one of its model folders, or a checkpoint file.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from anchoropt.cli.errors import run_cli
from anchoropt.engine.checkpoint import BEST_NAME, epoch_file_name, latest_checkpoint_path, load_checkpoint
from anchoropt.errors import CheckpointError
from anchoropt.method.position_export import (
    EXTRAS_KEY,
    LOGITS_SUFFIX,
    export_positions,
    position_report,
    positions_from_checkpoint,
)

_EPOCH_FILE = re.compile(r"^model\.pth\.tar-(\d+)$")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="anchoropt-positions",
        description="Show the learned position matrix of a Stage II AnchorOPT checkpoint: writes a heatmap PNG "
        "(rows = prompt slots, columns = the sources V1..VM, A1..AN it can take; the paper's Figure 4, with the "
        "chosen cell of each slot outlined) and prints the chosen order and the matrices.",
    )
    p.add_argument("model_dir", help="Stage II output directory, its model folder, or a checkpoint file")
    p.add_argument(
        "--load-epoch",
        type=int,
        default=None,
        help="read model.pth.tar-<epoch> (default: model-best.pth.tar if present, else the latest checkpoint)",
    )
    p.add_argument("--out", default="", help="PNG to write (default: positions.png in MODEL_DIR)")
    p.add_argument("--text", default="", help="also write the text report to this file")
    p.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    return p


def _checkpoint_in(folder: Path, epoch: int | None) -> Path | None:
    if epoch is not None:
        path = folder / epoch_file_name(epoch)
        return path if path.is_file() else None
    if (folder / BEST_NAME).is_file():
        return folder / BEST_NAME
    latest = latest_checkpoint_path(str(folder))
    if latest:
        return Path(latest)
    epochs = [(int(m.group(1)), item) for item in folder.iterdir() if (m := _EPOCH_FILE.match(item.name))]
    return max(epochs)[1] if epochs else None


def _holds_positions(checkpoint: dict) -> bool:
    extras = checkpoint.get(EXTRAS_KEY) or {}
    state = checkpoint.get("state_dict") or {}
    return "position_mode" in extras or any(str(key).endswith(LOGITS_SUFFIX) for key in state)


def find_position_checkpoint(path: str | Path, epoch: int | None = None) -> tuple[Path, dict]:
    """The checkpoint file (and its content) holding a position matrix under `path`."""
    path = Path(path)
    if path.is_file():
        checkpoint = load_checkpoint(str(path))
        if not _holds_positions(checkpoint):
            raise CheckpointError(f"{path} holds no position matrix (expected a Stage II AnchorOPT checkpoint)")
        return path, checkpoint
    if not path.is_dir():
        raise CheckpointError(f"{path} does not exist (expected the output directory of a Stage II AnchorOPT run)")
    looked = []
    for folder in [path, *sorted(item for item in path.iterdir() if item.is_dir())]:
        candidate = _checkpoint_in(folder, epoch)
        if candidate is None:
            continue
        looked.append(str(candidate))
        checkpoint = load_checkpoint(str(candidate))
        if _holds_positions(checkpoint):
            return candidate, checkpoint
    which = epoch_file_name(epoch) if epoch is not None else f"{BEST_NAME} or the latest model.pth.tar-<epoch>"
    found = f"; checked {', '.join(looked)}" if looked else ""
    raise CheckpointError(
        f"no Stage II checkpoint with a position matrix in {path} or its model folders (looked for {which}{found})"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path, checkpoint = find_position_checkpoint(args.model_dir, args.load_epoch)
    positions = positions_from_checkpoint(checkpoint, source=str(path))
    model_dir = Path(args.model_dir)
    out = Path(args.out) if args.out else (model_dir if model_dir.is_dir() else path.parent) / "positions.png"
    order = export_positions(positions, out, args.text or None)
    epoch = checkpoint.get("epoch")
    print(f"checkpoint: {path}" + (f" (epoch {epoch})" if isinstance(epoch, int) else ""))
    print(position_report(positions), end="")
    print(f"heatmap: {out}")
    if args.text:
        print(f"report: {args.text}")
    print(f"chosen order: {order}")
    return 0


def console_main() -> None:
    sys.exit(run_cli(main)())


if __name__ == "__main__":
    console_main()
