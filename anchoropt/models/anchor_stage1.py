"""AnchorOPT Stage I: anchor tokens A learned so that "[A] of <class>." matches the class descriptions.

The model is CoOp's `PromptedCLIP` around `AnchorPromptLearner`; the description
features are encoded once with the frozen text encoder, outside any graph.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from clip.model import CLIP
from torch import nn

from anchoropt.backbone import TextEncoder
from anchoropt.errors import CheckpointError, ConfigError
from anchoropt.models.clip_parts import normalize
from anchoropt.prompts.context import init_context
from anchoropt.prompts.layout import ANCHOR_TEMPLATE, PromptLayout

ANCHOR_LEN_KEY = "TRAINER.ANCHOROPT.ANCHOR_LEN"


def check_anchor_len(anchor_len: int) -> int:
    if anchor_len < 1:
        raise ConfigError(f"{ANCHOR_LEN_KEY} must be at least 1, got {anchor_len}")
    return int(anchor_len)


def anchor_layout(clip_model: CLIP, classnames: Sequence[str], anchor_len: int) -> PromptLayout:
    """The layout of "[SOS] A of <class>. [EOS]" with `anchor_len` slots for A."""
    return PromptLayout(clip_model.token_embedding, classnames, ANCHOR_TEMPLATE, anchor_len,
                        context_length=clip_model.positional_embedding.shape[0])


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
                f"anchor of shape {tuple(anchor.shape)} does not fit this model: expected {tuple(self.anchor_ctx_1.shape)} "
                f"({ANCHOR_LEN_KEY} x CLIP text width)"
            )
        self.anchor_ctx_1.copy_(anchor.to(self.anchor_ctx_1))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt embeddings [n_cls, L, width] and EOT positions [n_cls]."""
        return self.layout.assemble(self.anchor_ctx_1), self.layout.eot_index


@dataclass
class DescriptionFeatures:
    """Normalised features of every description sentence, flattened over classes."""

    features: torch.Tensor  # [P, embed_dim], fp32
    owner: torch.Tensor  # [P] class index of each sentence
    per_class: list[int]  # sentences per class

    @property
    def num_classes(self) -> int:
        return len(self.per_class)

    def to(self, device: torch.device | str) -> "DescriptionFeatures":
        return DescriptionFeatures(self.features.to(device), self.owner.to(device), list(self.per_class))


@torch.no_grad()
def encode_descriptions(text_encoder: TextEncoder, descriptions: Sequence[Sequence[str]]) -> DescriptionFeatures:
    """Encode the sentences of each class once (tokenizer truncation, no graph) and normalise them."""
    sentences = [sentence for per_class in descriptions for sentence in per_class]
    owner = torch.tensor([c for c, per_class in enumerate(descriptions) for _ in per_class], dtype=torch.long)
    features = normalize(text_encoder.encode_texts(sentences)).detach()
    return DescriptionFeatures(features, owner.to(features.device), [len(d) for d in descriptions])


def description_mse(anchor_features: torch.Tensor, descriptions: DescriptionFeatures) -> torch.Tensor:
    """Mean over (class, sentence, dim) of (z_c - d_{c,k})², z_c the normalised anchor-prompt features [C, e].

    With the same number of sentences per class this is exactly ``nn.MSELoss`` between z
    repeated K times and the [C, K, e] description features (the official loss).
    """
    if anchor_features.shape[0] != descriptions.num_classes:
        raise ValueError(f"{anchor_features.shape[0]} anchor-prompt features for {descriptions.num_classes} described classes")
    diff = anchor_features.float()[descriptions.owner] - descriptions.features
    return diff.pow(2).mean()
