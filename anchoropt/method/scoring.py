"""Inference rule of AnchorOPT Stage II: which logits score which class.

``auto`` (default, the official per-split rule): when every evaluated class was trained on (the
base test, the ImageNet variants of domain generalisation) every class is scored with the
learned prompt z_n; otherwise (new classes, all classes, cross-dataset targets) every class is
scored with the ensemble (z_n + z_a)/2, so one argmax never compares logits of two kinds.
``per_class`` mixes them inside one evaluation, matched by class name: trained classes get z_n,
the others the ensemble (names overlap across datasets: 16 of 37 OxfordPets classes are ImageNet
names). ``normal`` / ``ensemble`` / ``anchor`` force one rule for analysis.
"""

from collections.abc import Sequence

import torch

from anchoropt.errors import ConfigError
from anchoropt.method.names import normalize_classname

SCORING_MODES = ("auto", "per_class", "normal", "ensemble", "anchor")
SCORING_MODE_KEY = "TRAINER.ANCHOROPT.SCORING_MODE"

#: What each rule means, for logs and results files.
RULE_DESCRIPTIONS = {
    "normal": "learned prompt for every class",
    "ensemble": "(learned + anchor prompt) / 2 for every class",
    "anchor": "anchor prompt for every class",
    "per_class": "learned prompt for trained classes (by name), ensemble for the others",
}


def _check_mode(mode: str) -> None:
    if mode not in SCORING_MODES:
        raise ConfigError(
            f"{SCORING_MODE_KEY}: unknown scoring mode '{mode}' (expected one of {', '.join(SCORING_MODES)})"
        )


def seen_mask_for(classnames: Sequence[str], trained_classnames: Sequence[str]) -> torch.Tensor:
    """Bool tensor [C]: True where the class (matched by normalised name) was trained on."""
    trained = {normalize_classname(name) for name in trained_classnames}
    return torch.tensor([normalize_classname(name) in trained for name in classnames], dtype=torch.bool)


def scoring_rule(seen_mask: torch.Tensor, mode: str = "auto") -> str:
    """The rule `mode` applies to an evaluation whose classes are `seen_mask` (one of `RULE_DESCRIPTIONS`).

    ``auto`` resolves per evaluation set: ``normal`` when every evaluated class was trained on,
    ``ensemble`` otherwise.
    """
    _check_mode(mode)
    if mode == "auto":
        return "normal" if bool(seen_mask.all()) else "ensemble"
    if mode == "per_class" and bool(seen_mask.all()):
        return "normal"  # nothing to mix
    return mode


def needs_anchor_logits(seen_mask: torch.Tensor, mode: str = "auto") -> bool:
    """Whether `combine_logits` will read the anchor logits, so callers can skip that branch."""
    return scoring_rule(seen_mask, mode) != "normal"


def combine_logits(
    normal: torch.Tensor,
    anchor: torch.Tensor | None,
    seen_mask: torch.Tensor,
    mode: str = "auto",
) -> torch.Tensor:
    """Logits [B, C] under `mode` (see the module docstring and `scoring_rule`).

    `anchor` may be None when the rule does not read it (see `needs_anchor_logits`).
    """
    _check_mode(mode)
    if seen_mask.shape != normal.shape[-1:]:
        raise ValueError(
            f"seen_mask has shape {tuple(seen_mask.shape)}, expected [{normal.shape[-1]}] (one entry per class)"
        )
    rule = scoring_rule(seen_mask, mode)
    if rule == "normal":
        return normal
    if anchor is None:
        raise ValueError(f"scoring rule '{rule}' needs the anchor logits")
    if rule == "anchor":
        return anchor
    ensemble = (normal + anchor) / 2
    if rule == "ensemble":
        return ensemble
    return torch.where(seen_mask.to(normal.device), normal, ensemble)
