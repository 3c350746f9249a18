"""Per-class inference rule: trained classes score with the learned prompt,
unseen classes with the average of the learned prompt and the anchor prompt."""

from collections.abc import Sequence

import torch

from anchoropt.errors import ConfigError
from anchoropt.method.names import normalize_classname

SCORING_MODES = ("auto", "normal", "ensemble", "anchor")
SCORING_MODE_KEY = "TRAINER.ANCHOROPT.SCORING_MODE"


def _check_mode(mode: str) -> None:
    if mode not in SCORING_MODES:
        raise ConfigError(
            f"{SCORING_MODE_KEY}: unknown scoring mode '{mode}' (expected one of {', '.join(SCORING_MODES)})"
        )


def seen_mask_for(classnames: Sequence[str], trained_classnames: Sequence[str]) -> torch.Tensor:
    """Bool tensor [C]: True where the class (matched by normalised name) was trained on."""
    trained = {normalize_classname(name) for name in trained_classnames}
    return torch.tensor([normalize_classname(name) in trained for name in classnames], dtype=torch.bool)


def needs_anchor_logits(seen_mask: torch.Tensor, mode: str = "auto") -> bool:
    """Whether `combine_logits` will read the anchor logits, so callers can skip that branch."""
    _check_mode(mode)
    if mode == "normal":
        return False
    return mode != "auto" or not bool(seen_mask.all())


def combine_logits(
    normal: torch.Tensor,
    anchor: torch.Tensor | None,
    seen_mask: torch.Tensor,
    mode: str = "auto",
) -> torch.Tensor:
    """Logits [B, C] under the chosen rule.

    auto: column c is z_n if class c is seen, else (z_n + z_a)/2.
    normal / ensemble / anchor: one rule for every class (for analysis).
    `anchor` may be None when the rule does not read it (see `needs_anchor_logits`).
    """
    _check_mode(mode)
    if seen_mask.shape != normal.shape[-1:]:
        raise ValueError(
            f"seen_mask has shape {tuple(seen_mask.shape)}, expected [{normal.shape[-1]}] (one entry per class)"
        )
    if mode == "normal" or (mode == "auto" and bool(seen_mask.all())):
        return normal
    if anchor is None:
        raise ValueError(f"scoring mode '{mode}' needs the anchor logits for unseen classes")
    if mode == "anchor":
        return anchor
    ensemble = (normal + anchor) / 2
    if mode == "ensemble":
        return ensemble
    return torch.where(seen_mask.to(normal.device), normal, ensemble)
