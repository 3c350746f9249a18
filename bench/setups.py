"""Building what both paths of a benchmark share: the random CLIP, the prompt learners and optimisers.

Both paths of a case are built by the same function with the same seed, so they start from the
same weights, the same learned tensors and the same anchor; only what they compute differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from clip.model import CLIP
from torch import nn

from anchoropt.backbone import Precision, model_dims
from anchoropt.backbone.random_clip import build_random_clip
from anchoropt.models.anchor_prompt import AnchorPromptLearner
from anchoropt.models.coop import PromptedCLIP
from anchoropt.models.coop_anchoropt import CoOpAnchorOPTCLIP
from anchoropt.models.maple_anchoropt import MaPLeAnchorOPTCLIP, MaPLeAnchorOPTPromptLearner
from anchoropt.models.stage2_base import AnchorOPTPromptLearner
from bench.common import make_precision
from trainers.anchoropt_stage1 import StageISettings
from trainers.anchoropt_stage2 import StageIISettings

METHODS = ("coop", "maple")

# The published settings (configs/trainers/*/vit_b16.yaml): SGD, momentum 0.9, wd 5e-4.
LEARNING_RATES = {"coop": 0.002, "maple": 0.0035, "stage1": 0.002}
MAPLE_DEPTH = 9


def load_random_clip(spec: str, device: torch.device, prec: str, seed: int = 0) -> tuple[CLIP, Precision]:
    """A random CLIP of architecture `spec`, converted to `prec` and moved to `device` (as `ClipTrainer.load_clip`)."""
    clip_model = build_random_clip(spec, seed=seed)
    precision = make_precision(prec, device)
    precision.apply(clip_model)
    return clip_model.to(device), precision


def sgd(module: nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=lr, momentum=0.9, weight_decay=5e-4)


def stage2_settings(n_ctx: int = 4, anchor_len: int = 1) -> StageIISettings:
    """The published CoOp + AnchorOPT defaults (learned positions, CE and KD weights 1, T = 1)."""
    return StageIISettings(
        n_ctx=n_ctx,
        anchor_len=anchor_len,
        ctx_init="",
        position_mode="learned",
        gumbel_temp=1.0,
        sinkhorn_iters=20,
        ce_weight=1.0,
        kd_weight=1.0,
        kd_temperature=1.0,
        scoring_mode="auto",
        anchor_path="",
        legacy=False,
    )


def stage1_settings(sentences_per_class: int, anchor_len: int = 1) -> StageISettings:
    return StageISettings(
        anchor_len=anchor_len, mse_weight=1000.0, ce_weight=0.0, max_per_class=sentences_per_class, descriptions=""
    )


def stand_in_anchor(clip_model: CLIP, anchor_len: int, seed: int) -> torch.Tensor:
    """A fixed N(0, 0.02²) anchor in place of a Stage I result (its values do not change the cost)."""
    width = clip_model.token_embedding.weight.shape[1]
    return 0.02 * torch.randn(anchor_len, width, generator=torch.Generator().manual_seed(seed + 7))


@dataclass
class Stage2Setup:
    model: nn.Module  # CoOpAnchorOPTCLIP or MaPLeAnchorOPTCLIP
    optimizer: torch.optim.Optimizer
    settings: StageIISettings

    @property
    def learner(self) -> nn.Module:
        return self.model.prompt_learner


def build_stage2(
    clip_model: CLIP, method: str, classnames: Sequence[str], seed: int = 0, n_ctx: int = 4, anchor_len: int = 1
) -> Stage2Setup:
    """The Stage II model of `method` ("coop" or "maple") with its learner in training mode and an SGD optimiser."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    device = clip_model.positional_embedding.device
    anchor = stand_in_anchor(clip_model, anchor_len, seed)
    torch.manual_seed(seed)
    options = dict(n_ctx=n_ctx, anchor_len=anchor_len, anchor=anchor)
    if method == "coop":
        learner = AnchorOPTPromptLearner(clip_model, classnames, **options)
        model = CoOpAnchorOPTCLIP(clip_model, learner)
    else:
        dims = model_dims(clip_model)
        depth = min(MAPLE_DEPTH, dims.text_layers, dims.vision_layers)
        learner = MaPLeAnchorOPTPromptLearner(clip_model, classnames, prompt_depth=depth, **options)
        model = MaPLeAnchorOPTCLIP(clip_model, learner)
    model.to(device)
    learner.train()
    return Stage2Setup(model, sgd(learner, LEARNING_RATES[method]), stage2_settings(n_ctx, anchor_len))


@dataclass
class Stage1Setup:
    model: PromptedCLIP
    optimizer: torch.optim.Optimizer
    settings: StageISettings

    @property
    def learner(self) -> AnchorPromptLearner:
        return self.model.prompt_learner


def build_stage1(
    clip_model: CLIP, classnames: Sequence[str], sentences_per_class: int, seed: int = 0, anchor_len: int = 1
) -> Stage1Setup:
    """Stage I's model (`PromptedCLIP` around `AnchorPromptLearner`, as `AnchorOPT_StageI` builds it)."""
    device = clip_model.positional_embedding.device
    torch.manual_seed(seed)
    learner = AnchorPromptLearner(clip_model, classnames, anchor_len)
    model = PromptedCLIP(clip_model, learner).to(device)
    learner.train()
    return Stage1Setup(model, sgd(learner, LEARNING_RATES["stage1"]), stage1_settings(sentences_per_class, anchor_len))
