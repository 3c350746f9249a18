"""CoOp: learnable context vectors in front of (or around) the class name."""

from __future__ import annotations

from typing import Sequence

import torch
from clip.model import CLIP
from torch import nn

from anchoropt.backbone import TextEncoder
from anchoropt.models.clip_parts import ImageEncoder, normalize, scaled_logits
from anchoropt.prompts.context import init_context
from anchoropt.prompts.layout import PromptLayout, template_for_position


class CoOpPromptLearner(nn.Module):
    """Context ``ctx`` ([K, d], or [n_cls, K, d] with CSC) placed by CoOp's class-token position.

    The state dict holds only ``ctx``: the class-dependent token buffers are rebuilt from
    class names, so a checkpoint trained on base classes evaluates on new ones.
    """

    def __init__(
        self,
        clip_model: CLIP,
        classnames: Sequence[str],
        n_ctx: int,
        ctx_init: str = "",
        csc: bool = False,
        class_token_position: str = "end",
    ) -> None:
        super().__init__()
        init = init_context(clip_model.token_embedding, n_ctx, ctx_init, n_cls=len(classnames) if csc else None)
        self.ctx = nn.Parameter(init.vectors)
        self.csc = csc
        self.prompt_prefix = init.prefix
        self.layout = PromptLayout(
            clip_model.token_embedding,
            classnames,
            template_for_position(class_token_position),
            init.n_ctx,
            context_length=clip_model.positional_embedding.shape[0],
        )
        print(f'Initial context: "{init.prefix}"')
        print(f"Number of context words (tokens): {init.n_ctx}")

    def set_classnames(self, classnames: Sequence[str]) -> None:
        if self.csc and len(classnames) != self.ctx.shape[0]:
            raise ValueError("class-specific context (CSC) cannot be applied to a different set of classes")
        self.layout.set_class_names(classnames)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt embeddings [n_cls, L, d] and EOT positions [n_cls]."""
        return self.layout.assemble(self.ctx, class_specific=self.csc), self.layout.eot_index


class PromptedCLIP(nn.Module):
    """Frozen CLIP scoring images against the prompts of a prompt learner.

    ``forward(image, text_features)`` accepts precomputed class features so an
    evaluation encodes the (fixed) prompts once instead of once per batch.
    """

    def __init__(self, clip_model: CLIP, prompt_learner: nn.Module) -> None:
        super().__init__()
        self.prompt_learner = prompt_learner
        self.text_encoder = TextEncoder(clip_model)
        self.image_encoder = ImageEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale

    def text_features(self) -> torch.Tensor:
        embeds, eot_index = self.prompt_learner()
        return normalize(self.text_encoder(embeds, eot_index))

    def forward(self, image: torch.Tensor, text_features: torch.Tensor | None = None) -> torch.Tensor:
        if text_features is None:
            text_features = self.text_features()
        return scaled_logits(self.image_encoder(image), text_features, self.logit_scale)
