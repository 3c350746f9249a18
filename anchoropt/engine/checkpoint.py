"""Checkpoint files: Dassl's names and layout, safe and atomic.

Layout (as Dassl): ``<output>/<model name>/model.pth.tar-<epoch>``,
``model-best.pth.tar`` and a ``checkpoint`` pointer file naming the latest one.
Unlike Dassl, a checkpoint holds only tensors and plain Python values (the LR
scheduler is stored as its state dict), it is written through a temp file and a
rename, and it is read with ``torch.load(weights_only=True)``, so loading never
runs pickled code and a crash mid-save never leaves a truncated file.
"""

from __future__ import annotations

import io
import os
import os.path as osp
import pickle
import random
import re
from typing import Any

import numpy as np
import torch

from anchoropt.engine.builtin.tools import mkdir_if_missing
from anchoropt.errors import CheckpointError
from anchoropt.fileio import atomic_write_bytes

POINTER_FILE = "checkpoint"
BEST_NAME = "model-best.pth.tar"
EPOCH_FILE = re.compile(r"model\.pth\.tar-(\d+)$")


class CheckpointUnreadable(CheckpointError):
    """A checkpoint file is truncated or corrupt (e.g. a copy cut short, a full disk)."""


def epoch_file_name(epoch: int) -> str:
    return f"model.pth.tar-{epoch}"


def save_checkpoint(state: dict, save_dir: str, is_best: bool = False, model_name: str = "") -> str:
    """Save ``state`` atomically; update the pointer file; return the path written."""
    mkdir_if_missing(save_dir)
    state = dict(state)
    state["state_dict"] = {
        (k[len("module.") :] if k.startswith("module.") else k): v for k, v in state["state_dict"].items()
    }
    fpath = osp.join(save_dir, model_name or epoch_file_name(state["epoch"]))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    try:
        atomic_write_bytes(fpath, payload)
        atomic_write_bytes(osp.join(save_dir, POINTER_FILE), (osp.basename(fpath) + "\n").encode())
        if is_best:
            atomic_write_bytes(osp.join(save_dir, BEST_NAME), payload)
    except OSError as e:  # e.g. a full disk: the temp file is gone, the earlier checkpoints are intact
        raise CheckpointError(
            f"Cannot write checkpoint {fpath}: {e.strerror or e}; the earlier checkpoints in {save_dir} are intact "
            "and a rerun resumes from the latest"
        ) from None
    print(f"Checkpoint saved to {fpath}")
    return fpath


def load_checkpoint(fpath: str) -> dict:
    """Load a checkpoint with ``weights_only=True``; refuse pickled objects."""
    if not fpath:
        raise CheckpointError("Checkpoint path is empty")
    if not osp.isfile(fpath):
        raise CheckpointError(f'No checkpoint file at "{fpath}"')
    try:
        return torch.load(fpath, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f'Refusing to load "{fpath}": it contains pickled Python objects, not only tensors and plain '
            f"values ({refused_global(e)}); nothing in it was run. Checkpoints written by this toolkit never do; "
            "a file from elsewhere must be converted to a plain state dict."
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointUnreadable(f'Cannot read checkpoint "{fpath}" (truncated or corrupt?): {e}') from None


def refused_global(error: pickle.UnpicklingError) -> str:
    """What ``torch.load(weights_only=True)`` refused, in a few words (torch's text is a page of advice)."""
    text = str(error)
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if match:
        return f"it references {match.group(1)}"
    lines = re.sub(r"\x1b\[[0-9;]*m", "", text).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def latest_checkpoint_path(fdir: str) -> str | None:
    """The file the pointer in ``fdir`` names, or None when there is none."""
    pointer = osp.join(fdir, POINTER_FILE)
    if not osp.isfile(pointer):
        return None
    with open(pointer) as f:
        name = f.readline().strip()
    path = osp.join(fdir, name)
    return path if name and osp.isfile(path) else None


def epoch_checkpoints(fdir: str) -> dict[int, str]:
    """``{epoch: path}`` of the ``model.pth.tar-<epoch>`` files in ``fdir``."""
    if not osp.isdir(fdir):
        return {}
    found = {}
    for name in os.listdir(fdir):
        match = EPOCH_FILE.match(name)
        if match:
            found[int(match.group(1))] = osp.join(fdir, name)
    return found


def capture_rng_state() -> dict:
    """RNG states as plain values, so a resumed run continues the same random stream."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].copy()),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict | None) -> None:
    if not state:
        return
    random.setstate(_as_tuple(state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x: Any) -> Any:
    # random.setstate wants nested tuples; a round trip may have produced lists.
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
