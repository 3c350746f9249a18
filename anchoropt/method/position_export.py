"""Exporting a learned position matrix: heatmap PNG (the paper's Figure 4) and a text report.

Used at the end of Stage II training and by ``anchoropt-positions``, which rebuilds the
`PositionMatrix` from a checkpoint (its ``positions.logits`` and the settings stored with it).
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from anchoropt.errors import CheckpointError
from anchoropt.method.position_plot import render_position_matrix
from anchoropt.method.positions import TRAINABLE_MODES, PositionMatrix, anchor_slots, order_text

LOGITS_SUFFIX = "positions.logits"
EXTRAS_KEY = "anchoropt"  # where Stage II trainers store their settings in a checkpoint


def _matrix_lines(matrix: torch.Tensor) -> list[str]:
    return ["  " + " ".join(f"{float(v):7.3f}" for v in row) for row in matrix.detach().float().cpu()]


def position_report(positions: PositionMatrix) -> str:
    """The chosen order, where each anchor sits, and the matrices (rows = slots, columns = V1..VM, A1..AN)."""
    chosen = positions.deterministic()
    slots = anchor_slots(chosen, positions.num_ctx, positions.anchor_len)
    where = ", ".join(f"A{j + 1}: {'slot ' + str(s + 1) if s is not None else 'no slot'}" for j, s in enumerate(slots))
    lines = [
        f"mode: {positions.mode}" + (f" (tau {positions.tau})" if positions.trainable else ""),
        f"order: {order_text(chosen, positions.num_ctx, positions.anchor_len)}",
        f"anchors: {where}",
        "evaluation matrix P (row = slot, column = source):",
        *_matrix_lines(chosen),
    ]
    if positions.trainable:
        lines += [
            "soft view (row softmax of logits / tau)"
            if positions.mode == "learned"
            else "soft view (Sinkhorn of logits / tau)",
            *_matrix_lines(positions.probabilities()),
            "logits:",
            *_matrix_lines(positions.logits),
        ]
    return "\n".join(lines) + "\n"


def export_positions(positions: PositionMatrix, png_path: str | Path, txt_path: str | Path | None = None) -> str:
    """Write the heatmap (soft view, order from the evaluation matrix) and optionally the report; return the order."""
    chosen = positions.deterministic()
    title = f"position matrix ({positions.mode}): row = slot, column = source"
    render_position_matrix(
        positions.probabilities(), png_path, positions.num_ctx, positions.anchor_len, title=title, order_matrix=chosen
    )
    if txt_path is not None:
        Path(txt_path).parent.mkdir(parents=True, exist_ok=True)
        Path(txt_path).write_text(position_report(positions))
    return order_text(chosen, positions.num_ctx, positions.anchor_len)


def position_settings(positions: PositionMatrix) -> dict[str, Any]:
    """Plain values a checkpoint stores so the matrix can be rebuilt without the config."""
    return {
        "position_mode": positions.mode,
        "gumbel_temp": positions.tau,
        "sinkhorn_iters": positions.sinkhorn_iters,
        "n_ctx": positions.num_ctx,
        "anchor_len": positions.anchor_len,
        "legacy": positions.legacy,
    }


def positions_from_checkpoint(checkpoint: Mapping[str, Any], source: str = "checkpoint") -> PositionMatrix:
    """Rebuild the position matrix of a Stage II checkpoint (settings from its extras, Θ from its state dict)."""
    state = checkpoint.get("state_dict")
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source} has no state_dict")
    extras = checkpoint.get(EXTRAS_KEY) or {}
    logits_keys = [key for key in state if key == "logits" or str(key).endswith(LOGITS_SUFFIX)]
    mode = extras.get("position_mode", "learned" if logits_keys else None)
    if mode is None or (not logits_keys and "n_ctx" not in extras):
        raise CheckpointError(
            f"{source} holds no position matrix: expected a Stage II (AnchorOPT) checkpoint with "
            f"state_dict key '{LOGITS_SUFFIX}' or '{EXTRAS_KEY}' settings"
        )
    if mode in TRAINABLE_MODES:
        if len(logits_keys) != 1:
            raise CheckpointError(
                f"{source}: position mode '{mode}' but {len(logits_keys)} '{LOGITS_SUFFIX}' entries in the state dict"
            )
        logits = state[logits_keys[0]]
        size = logits.shape[0]
        anchor_len = int(extras.get("anchor_len", 1))
        n_ctx = int(extras.get("n_ctx", size - anchor_len))
        if n_ctx + anchor_len != size:
            raise CheckpointError(f"{source}: logits are {size}x{size} but N_CTX={n_ctx} and ANCHOR_LEN={anchor_len}")
    else:
        n_ctx, anchor_len = int(extras["n_ctx"]), int(extras["anchor_len"])
    positions = PositionMatrix(
        n_ctx,
        anchor_len,
        mode,
        float(extras.get("gumbel_temp", 1.0)),
        int(extras.get("sinkhorn_iters", 20)),
        bool(extras.get("legacy", False)),
    )
    if positions.trainable:
        with torch.no_grad():
            positions.logits.copy_(logits.float())
    return positions.eval()
