"""Frozen-CLIP pieces every prompted model uses: image features, scaled cosine logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from clip.model import CLIP
from torch import nn

from anchoropt.models.deep_prompts import vit_image_embedding


class ImageEncoder(nn.Module):
    """CLIP's image tower returning L2-normalised features in fp32.

    It takes images [B, 3, H, W] or, in their place, the features [B, e] it computed for them before
    (`raw`'s output, e.g. from the frozen-feature cache, ``anchoropt.features``): those pass through
    unchanged, so a model built on this encoder scores cached features exactly as it scores images.
    """

    def __init__(self, clip_model: CLIP) -> None:
        super().__init__()
        self.visual = clip_model.visual

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    @property
    def output_dim(self) -> int:
        return int(self.visual.output_dim)

    def raw(self, image: torch.Tensor) -> torch.Tensor:
        """Unnormalised fp32 features [B, e] of images, or precomputed features [B, e] as they are."""
        if image.dim() == 2:
            if image.shape[1] != self.output_dim:
                raise ValueError(
                    f"precomputed image features of width {image.shape[1]} do not fit this image encoder "
                    f"(width {self.output_dim})"
                )
            return image.float()
        if hasattr(self.visual, "transformer"):  # ViT: the same features through our faster block loop
            return vit_image_embedding(self.visual, image)
        return self.visual(image.to(self.dtype)).float()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.raw(image), dim=-1)


def scaled_logits(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """``exp(logit_scale) * cos`` for normalised features: [B, d] x [C, d] -> [B, C]; [B, C, d] per-image prompts."""
    scale = logit_scale.exp().float()
    if text_features.dim() == 3:
        return scale * torch.einsum("bd,bcd->bc", image_features, text_features)
    return scale * image_features @ text_features.t()


def normalize(features: torch.Tensor) -> torch.Tensor:
    return F.normalize(features.float(), dim=-1)
