"""Frozen-CLIP pieces every prompted model uses: image features, scaled cosine logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from clip.model import CLIP
from torch import nn

from anchoropt.models.deep_prompts import vit_image_features


class ImageEncoder(nn.Module):
    """CLIP's image tower returning L2-normalised features in fp32."""

    def __init__(self, clip_model: CLIP) -> None:
        super().__init__()
        self.visual = clip_model.visual

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if hasattr(self.visual, "transformer"):  # ViT: the same features through our faster block loop
            return vit_image_features(self.visual, image)
        return F.normalize(self.visual(image.to(self.dtype)).float(), dim=-1)


def scaled_logits(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """``exp(logit_scale) * cos`` for normalised features: [B, d] x [C, d] -> [B, C]; [B, C, d] per-image prompts."""
    scale = logit_scale.exp().float()
    if text_features.dim() == 3:
        return scale * torch.einsum("bd,bcd->bc", image_features, text_features)
    return scale * image_features @ text_features.t()


def normalize(features: torch.Tensor) -> torch.Tensor:
    return F.normalize(features.float(), dim=-1)
