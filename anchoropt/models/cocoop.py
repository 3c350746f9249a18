"""CoCoOp (Zhou et al., CVPR 2022): context vectors shifted by an image-conditioned bias.

A meta-net ``Linear(e -> e/16), ReLU, Linear(-> d)`` maps the normalised image feature (e =
CLIP's embedding width) to a bias π(x) added to every context token, so each image gets its
own prompts ``[SOS] ctx + π(x) <class>. [EOS]``. The per-image prompts of a batch (B images x
C classes) go through the (exactly truncated) text encoder together, in chunks of whole images
rather than a Python loop over images.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from clip.model import CLIP
from torch import nn

from anchoropt.backbone import TextEncoder
from anchoropt.models.clip_parts import ImageEncoder, normalize, scaled_logits
from anchoropt.prompts.context import init_context
from anchoropt.prompts.layout import PromptLayout

#: Sequences per text-encoder call when encoding per-image prompts (whole images per chunk).
MAX_TEXT_SEQUENCES = 4096


def image_feature_dim(clip_model: CLIP) -> int:
    """Width of CLIP's image features (its joint embedding width), the meta-net's input."""
    return int(clip_model.visual.output_dim)


def build_meta_net(image_dim: int, text_width: int) -> nn.Sequential:
    """CoCoOp's meta-net (parameter names ``linear1`` / ``linear2`` as in the official code)."""
    hidden = max(1, image_dim // 16)
    return nn.Sequential(
        OrderedDict(
            [
                ("linear1", nn.Linear(image_dim, hidden)),
                ("relu", nn.ReLU(inplace=True)),
                ("linear2", nn.Linear(hidden, text_width)),
            ]
        )
    )


class ConditionalContext(nn.Module):
    """Mixin for prompt learners with context ``ctx`` [M, d] and a ``meta_net``: per-image contexts."""

    ctx: nn.Parameter
    meta_net: nn.Sequential

    def init_meta_net(self, clip_model: CLIP) -> None:
        width = self.ctx.shape[-1]
        self.meta_net = build_meta_net(image_feature_dim(clip_model), width).to(self.ctx.device)

    def image_context(self, image_features: torch.Tensor) -> torch.Tensor:
        """``ctx + π(x)`` for normalised image features [B, e]: [B, M, d]."""
        bias = self.meta_net(image_features)
        return self.ctx.unsqueeze(0) + bias.unsqueeze(1)


class CoCoOpPromptLearner(ConditionalContext, nn.Module):
    """``ctx`` [M, d] and the meta-net; class-dependent token buffers are rebuilt from class names.

    The state dict holds only ``ctx`` and ``meta_net.*``, so a checkpoint trained on base
    classes evaluates on new ones.
    """

    def __init__(self, clip_model: CLIP, classnames: Sequence[str], n_ctx: int, ctx_init: str = "") -> None:
        super().__init__()
        init = init_context(clip_model.token_embedding, n_ctx, ctx_init)
        self.ctx = nn.Parameter(init.vectors)
        self.init_meta_net(clip_model)
        self.layout = PromptLayout(
            clip_model.token_embedding,
            classnames,
            "{ctx} {class}.",
            init.n_ctx,
            context_length=clip_model.positional_embedding.shape[0],
        )
        print(f'Initial context: "{init.prefix}"')
        print(f"Number of context words (tokens): {init.n_ctx}")

    @property
    def classnames(self) -> list[str]:
        return list(self.layout.class_names)

    def set_classnames(self, classnames: Sequence[str]) -> None:
        self.layout.set_class_names(classnames)

    def forward(self, image_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image prompt embeddings [B, n_cls, L, d] and EOT positions [n_cls]."""
        return self.layout.assemble(self.image_context(image_features)), self.layout.eot_index


def encode_per_image_prompts(
    text_encoder: TextEncoder,
    embeds: torch.Tensor,
    readout: torch.Tensor,
    length: int,
    max_sequences: int = MAX_TEXT_SEQUENCES,
) -> torch.Tensor:
    """Normalised text features [B, C, e] of per-image prompts ``embeds`` [B, C, L, d].

    All B x C sequences are encoded together (truncated at ``length``), split into chunks of
    whole images holding at most `max_sequences` sequences (at least one image) to bound memory.
    """
    batch, n_cls = embeds.shape[:2]
    images_per_chunk = max(1, max_sequences // n_cls)
    flat_readout = readout.repeat(min(batch, images_per_chunk))
    chunks = []
    for start in range(0, batch, images_per_chunk):
        part = embeds[start : start + images_per_chunk]
        count = part.shape[0] * n_cls
        features = text_encoder(part.reshape(count, *part.shape[2:]), flat_readout[:count], length)
        chunks.append(normalize(features).reshape(part.shape[0], n_cls, -1))
    return torch.cat(chunks)


class CoCoOpCLIP(nn.Module):
    """Frozen CLIP scored against per-image prompts; nothing about the prompts is fixed in evaluation."""

    def __init__(
        self, clip_model: CLIP, prompt_learner: CoCoOpPromptLearner, max_text_sequences: int = MAX_TEXT_SEQUENCES
    ) -> None:
        super().__init__()
        self.prompt_learner = prompt_learner
        self.text_encoder = TextEncoder(clip_model)
        self.image_encoder = ImageEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        self.max_text_sequences = max_text_sequences

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        image_features = self.image_encoder(image)
        embeds, eot = self.prompt_learner(image_features)
        text = encode_per_image_prompts(
            self.text_encoder, embeds, eot, self.prompt_learner.layout.length, self.max_text_sequences
        )
        return scaled_logits(image_features, text, self.logit_scale)
