"""CLIP's text tower applied to prompt embeddings, truncated exactly at the last EOT.

CLIP's text transformer is causal, so the feature at the EOT position depends only on the
positions up to it. Running the transformer on the first ``max(eot_index) + 1`` positions
instead of all 77 gives the same features for a fraction of the cost.
"""

from __future__ import annotations

import functools
from typing import Sequence

import clip
import torch
from torch import nn
from clip.model import CLIP, ResidualAttentionBlock


@functools.lru_cache(maxsize=64)
def causal_attention_mask(length: int, device: torch.device) -> torch.Tensor:
    """Boolean [length, length] mask, True where attention is not allowed (future positions).

    Boolean so it works under any dtype and autocast; cached per (length, device).
    """
    return torch.ones(length, length, dtype=torch.bool, device=device).triu_(1)


def residual_block_forward(
    block: ResidualAttentionBlock,
    x: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
) -> torch.Tensor:
    """One CLIP residual attention block on `x` of shape [seq, batch, width] (CLIP's layout).

    Uses the block's own modules with the given mask instead of ``block.attn_mask``, so the
    sequence length may differ from the one the block was built for. ``is_causal=True`` tells
    attention that `attn_mask` is the causal mask (allows fused causal kernels).
    """
    h = block.ln_1(x)
    x = x + block.attn(h, h, h, need_weights=False, attn_mask=attn_mask, is_causal=is_causal)[0]
    return x + block.mlp(block.ln_2(x))


class TextEncoder(nn.Module):
    """Encode prompt embeddings [n, L, width] with CLIP's text tower into [n, embed_dim].

    Shares (does not copy) the CLIP's modules and parameters.
    """

    def __init__(self, clip_model: CLIP) -> None:
        super().__init__()
        self.token_embedding = clip_model.token_embedding
        self.positional_embedding = clip_model.positional_embedding
        self.resblocks = clip_model.transformer.resblocks
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the transformer weights (fp16 after `clip.model.convert_weights`)."""
        return self.text_projection.dtype

    @property
    def context_length(self) -> int:
        return self.positional_embedding.shape[0]

    def forward(
        self,
        embeds: torch.Tensor,
        eot_index: torch.Tensor,
        length: int | None = None,
    ) -> torch.Tensor:
        """Text features of prompts `embeds` [n, L, width], read at `eot_index` [n].

        Only the first `length` positions are run; `length` defaults to ``max(eot_index) + 1``
        (pass it when known, e.g. from a prompt layout, to avoid a device sync).
        """
        if length is None:
            length = int(eot_index.max()) + 1 if eot_index.numel() else 1
        if length > embeds.shape[1]:
            raise ValueError(f"eot_index reaches position {length - 1}, beyond the {embeds.shape[1]} positions given")
        x = embeds[:, :length].to(self.dtype)
        x = x + self.positional_embedding[:length].to(x.dtype)
        x = x.permute(1, 0, 2)  # CLIP's blocks take [seq, batch, width]
        x = self.run_layers(x, causal_attention_mask(length, x.device))
        x = x.permute(1, 0, 2)
        eot_features = x[torch.arange(x.shape[0], device=x.device), eot_index.to(x.device)]
        # LayerNorm is per position, so normalising only the EOT rows is exact and cheaper.
        return self.ln_final(eot_features).to(self.dtype) @ self.text_projection

    def run_layers(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """The transformer loop; subclasses override it to act between layers (deep prompts)."""
        for block in self.resblocks:
            x = residual_block_forward(block, x, attn_mask, is_causal=True)
        return x

    def encode_token_ids(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Features of tokenized sentences [n, context_length] (as from `clip.tokenize`), truncated.

        The EOT token has the largest id in CLIP's vocabulary, so its position is the argmax.
        """
        device = self.positional_embedding.device
        token_ids = token_ids.to(device=device, dtype=torch.long)
        eot_index = token_ids.argmax(dim=-1)
        length = int(eot_index.max()) + 1 if eot_index.numel() else 1
        embeds = self.token_embedding(token_ids[:, :length])
        return self.forward(embeds, eot_index, length)

    def encode_texts(self, texts: Sequence[str], truncate: bool = True, batch_size: int = 1024) -> torch.Tensor:
        """Features of plain sentences, tokenized once with `clip.tokenize` and encoded in batches."""
        token_ids = clip.tokenize(list(texts), context_length=self.context_length, truncate=truncate)
        chunks = [self.encode_token_ids(token_ids[i:i + batch_size])
                  for i in range(0, token_ids.shape[0], batch_size)]
        if not chunks:
            return self.text_projection.new_zeros(0, self.text_projection.shape[1])
        return torch.cat(chunks)
