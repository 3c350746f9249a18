"""Deep prompts: CLIP's own transformer blocks driven layer by layer, with prompt slots rewritten between layers.

A deep prompt replaces K consecutive positions of the hidden sequence at the input of
some layers. What goes there is decided by a *slot provider*, a callable

    provider(layer_index, hidden) -> Tensor | None

called before every layer ``i >= 1`` with ``hidden`` the sequence entering that layer,
batch first ``[batch, seq, width]`` (a view of the previous layer's output). It returns
the K slot vectors, ``[K, width]`` (shared by the batch) or ``[batch, K, width]``, or
None to leave the layer's input as it is. Layer 0 is never rewritten: its prompts are
part of the input embeddings (the "shallow" prompt).

MaPLe's provider returns the layer's learned compound prompt; MaPLe + AnchorOPT's
returns ``P @ [V_i; h_A]`` with the anchor state ``h_A`` read from ``hidden``.

Text prompts sit right after SOS (slots at positions 1..K, before EOT), so the
text encoder's exact truncation at the last EOT stays exact. Vision prompts sit after
the patch tokens (the last K positions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from clip.model import CLIP, ResidualAttentionBlock
from torch import nn

from anchoropt.backbone.text_encoder import TextEncoder, residual_block_forward

SlotProvider = Callable[[int, torch.Tensor], Optional[torch.Tensor]]


@dataclass
class DeepSlots:
    """Which positions a deep prompt rewrites (``start``, negative counts from the end) and with what."""

    start: int
    provider: SlotProvider


def replace_slots(x: torch.Tensor, slots: torch.Tensor, start: int) -> torch.Tensor:
    """``x`` [seq, batch, width] (CLIP's layout) with positions ``start .. start+K-1`` set to ``slots``.

    ``slots`` is ``[K, width]`` or ``[batch, K, width]``; it is cast to x's dtype. Built with
    ``cat`` (no in-place write) so gradients reach both the slots and the kept positions.
    """
    seq, batch, width = x.shape
    if slots.dim() == 2:
        slots = slots.unsqueeze(1).expand(-1, batch, -1)
    elif slots.dim() == 3:
        slots = slots.permute(1, 0, 2).expand(-1, batch, -1)  # a batch of 1 broadcasts
    else:
        raise ValueError(f"prompt slots must be [K, width] or [batch, K, width], got {tuple(slots.shape)}")
    count = slots.shape[0]
    begin = start + seq if start < 0 else start
    if slots.shape[-1] != width or begin < 0 or begin + count > seq:
        raise ValueError(
            f"{count} prompt slots of width {slots.shape[-1]} at position {start} do not fit a sequence of "
            f"{seq} positions of width {width}"
        )
    return torch.cat([x[:begin], slots.to(x.dtype), x[begin + count :]], dim=0)


def run_prompted_blocks(
    blocks: Iterable[ResidualAttentionBlock],
    x: torch.Tensor,
    attn_mask: torch.Tensor | None,
    is_causal: bool,
    deep: DeepSlots | None,
) -> torch.Tensor:
    """CLIP residual blocks on ``x`` [seq, batch, width], the deep slots rewritten before each layer >= 1."""
    for index, block in enumerate(blocks):
        if index > 0 and deep is not None:
            slots = deep.provider(index, x.permute(1, 0, 2))
            if slots is not None:
                x = replace_slots(x, slots, deep.start)
        x = residual_block_forward(block, x, attn_mask, is_causal=is_causal)
    return x


class DeepPromptTextEncoder(TextEncoder):
    """The truncated text encoder (`TextEncoder`) with optional deep prompt slots.

    ``forward(embeds, eot_index, length=None, deep=None)``: without ``deep`` it is exactly
    `TextEncoder`.
    """

    _deep: DeepSlots | None = None

    def forward(
        self, embeds: torch.Tensor, eot_index: torch.Tensor, length: int | None = None, deep: DeepSlots | None = None
    ) -> torch.Tensor:
        if deep is not None and deep.start < 1:
            # SOS stays; a negative start would point past the (truncated) EOT.
            raise ValueError(f"text prompt slots must start after SOS (position >= 1), got {deep.start}")
        # The base class owns embedding, truncation and read-out; the slots reach its layer loop
        # (`run_layers`) through the instance for the duration of this call.
        self._deep = deep
        try:
            return super().forward(embeds, eot_index, length)
        finally:
            self._deep = None

    def run_layers(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        return run_prompted_blocks(self.resblocks, x, attn_mask, True, self._deep)


class PromptedImageEncoder(nn.Module):
    """CLIP's ViT image tower with vision prompts appended after the patch tokens (MaPLe / VPT style).

    ``forward(image, shallow=None, deep=None)`` returns L2-normalised fp32 features.
    ``shallow`` [K, width] is appended after the positional embedding (prompts get no
    positional embedding) and goes through ``ln_pre`` with the other tokens, as in MaPLe;
    ``deep`` rewrites the last K positions at later layers. Without prompts the result
    equals ``clip_model.encode_image``. Shares (does not copy) CLIP's modules.
    """

    def __init__(self, clip_model: CLIP) -> None:
        super().__init__()
        visual = clip_model.visual
        if not hasattr(visual, "transformer"):
            raise ValueError("vision prompts need a ViT CLIP image encoder (this CLIP has a ResNet one)")
        self.visual = visual

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    @property
    def width(self) -> int:
        return int(self.visual.conv1.weight.shape[0])

    def forward(
        self, image: torch.Tensor, shallow: torch.Tensor | None = None, deep: DeepSlots | None = None
    ) -> torch.Tensor:
        return vit_image_features(self.visual, image, shallow, deep)


def vit_image_features(
    visual: nn.Module, image: torch.Tensor, shallow: torch.Tensor | None = None, deep: DeepSlots | None = None
) -> torch.Tensor:
    """L2-normalised fp32 features of CLIP's ViT tower `visual`, optionally prompted (see `PromptedImageEncoder`).

    Without prompts it equals ``visual(image)`` normalised, computed with our block loop (fewer copies
    and allocations than CLIP's own forward).
    """
    return F.normalize(vit_image_embedding(visual, image, shallow, deep), dim=-1)


def vit_image_embedding(
    visual: nn.Module, image: torch.Tensor, shallow: torch.Tensor | None = None, deep: DeepSlots | None = None
) -> torch.Tensor:
    """`vit_image_features` before the L2 normalisation (fp32 [B, e]): what the frozen-feature cache stores."""
    x = visual.conv1(image.to(visual.conv1.weight.dtype))  # [B, width, grid, grid]
    x = x.flatten(2).permute(0, 2, 1)  # [B, grid**2, width]
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    if shallow is not None:
        x = torch.cat([x, shallow.to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)
    elif deep is not None:
        raise ValueError("deep vision prompts need shallow ones: they rewrite the appended prompt positions")
    x = visual.ln_pre(x).permute(1, 0, 2).contiguous()  # [seq, B, width]; contiguous for the blocks' LayerNorms
    x = run_prompted_blocks(visual.transformer.resblocks, x, None, False, deep)
    x = visual.ln_post(x[0])
    if visual.proj is not None:
        x = x @ visual.proj
    return x.float()
