"""The anchor prompt "[A] of <class>.": Stage I's trainable learner and the layout of Stage II's anchor branch.

Stage I is CoOp's `PromptedCLIP` around `AnchorPromptLearner`, trained with
`anchoropt.method.losses.description_mse` against description features from
`anchoropt.method.descriptions.encode_descriptions`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from clip.model import CLIP
from torch import nn

from anchoropt.errors import CheckpointError, ConfigError
from anchoropt.prompts.context import init_context
from anchoropt.prompts.layout import ANCHOR_TEMPLATE, PromptLayout

ANCHOR_LEN_KEY = "TRAINER.ANCHOROPT.ANCHOR_LEN"


def check_anchor_len(anchor_len: int) -> int:
    if anchor_len < 1:
        raise ConfigError(f"{ANCHOR_LEN_KEY} must be at least 1, got {anchor_len}")
    return int(anchor_len)


def anchor_layout(clip_model: CLIP, classnames: Sequence[str], anchor_len: int) -> PromptLayout:
    """The layout of "[SOS] A of <class>. [EOS]" with `anchor_len` slots for A."""
    return PromptLayout(
        clip_model.token_embedding,
        classnames,
        ANCHOR_TEMPLATE,
        anchor_len,
        context_length=clip_model.positional_embedding.shape[0],
    )


class AnchorPromptLearner(nn.Module):
    """Trainable anchor tokens A [N, width] (init N(0, 0.02²)) in the prompt "[A] of <class>.".

    The parameter is called ``anchor_ctx_1`` as in the released anchor files, so every
    Stage I checkpoint is also readable by `anchoropt.method.anchor_checkpoint.load_anchor`.
    """

    def __init__(self, clip_model: CLIP, classnames: Sequence[str], anchor_len: int) -> None:
        super().__init__()
        anchor_len = check_anchor_len(anchor_len)
        self.anchor_ctx_1 = nn.Parameter(init_context(clip_model.token_embedding, anchor_len).vectors)
        self.layout = anchor_layout(clip_model, classnames, anchor_len)
        print(f'Anchor prompt: "{self.layout.prompts[0]}" (anchor tokens: {anchor_len})')

    @property
    def anchor(self) -> torch.Tensor:
        return self.anchor_ctx_1

    @property
    def classnames(self) -> list[str]:
        return list(self.layout.class_names)

    def set_classnames(self, classnames: Sequence[str]) -> None:
        self.layout.set_class_names(classnames)

    @torch.no_grad()
    def set_anchor(self, anchor: torch.Tensor) -> None:
        """Copy a loaded anchor into the parameter (shape must match)."""
        if tuple(anchor.shape) != tuple(self.anchor_ctx_1.shape):
            raise CheckpointError(
                f"anchor of shape {tuple(anchor.shape)} does not fit this model: expected "
                f"{tuple(self.anchor_ctx_1.shape)} "
                f"({ANCHOR_LEN_KEY} x CLIP text width)"
            )
        self.anchor_ctx_1.copy_(anchor.to(self.anchor_ctx_1))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt embeddings [n_cls, L, width] and EOT positions [n_cls]."""
        return self.layout.assemble(self.anchor_ctx_1), self.layout.eot_index
