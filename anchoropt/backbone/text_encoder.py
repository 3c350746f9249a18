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
import torch.nn.functional as F
from clip.model import CLIP, QuickGELU, ResidualAttentionBlock
from torch import nn


@functools.lru_cache(maxsize=64)
def causal_attention_mask(length: int, device: torch.device) -> torch.Tensor:
    """Boolean [length, length] mask, True where attention is not allowed (future positions).

    Boolean so it works under any dtype and autocast; cached per (length, device).
    """
    return torch.ones(length, length, dtype=torch.bool, device=device).triu_(1)


def self_attention(
    attn: nn.MultiheadAttention,
    x: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
) -> torch.Tensor:
    """``attn(x, x, x)[0]`` for CLIP's self-attention on `x` [seq, batch, width], computed from its weights.

    Same result as `nn.MultiheadAttention` (no dropout, no bias_k/v in CLIP), without its
    packed-projection copies, whose backward also zero-fills three [3, seq, batch, width]
    buffers per layer: the text encoder's backward runs about 15% faster on a CPU.
    `attn_mask` follows MultiheadAttention's convention (bool: True = not allowed; float: added).
    """
    seq, batch, width = x.shape
    heads = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(seq, batch, 3, heads, width // heads).permute(2, 1, 3, 0, 4).unbind(0)  # [batch, heads, seq, d]
    if is_causal:
        attn_mask = None  # the fused causal kernel applies it
    elif attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = ~attn_mask  # scaled_dot_product_attention's bool masks say where attention is allowed
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
    return F.linear(out.permute(2, 0, 1, 3).reshape(seq, batch, width), attn.out_proj.weight, attn.out_proj.bias)


def residual_block_forward(
    block: ResidualAttentionBlock,
    x: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
) -> torch.Tensor:
    """One CLIP residual attention block on `x` of shape [seq, batch, width] (CLIP's layout).

    Uses the block's own parameters with the given mask instead of ``block.attn_mask``, so the
    sequence length may differ from the one the block was built for. ``is_causal=True`` tells
    attention that `attn_mask` is the causal mask (uses the fused causal kernel). Pass `x`
    contiguous: LayerNorm copies a permuted view, twice per layer with a backward pass.
    """
    x = _residual_add(x, self_attention(block.attn, block.ln_1(x), attn_mask, is_causal))
    return _residual_add(x, mlp_forward(block.mlp, block.ln_2(x)))


def mlp_forward(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """CLIP's block MLP (``c_fc``, QuickGELU, ``c_proj``); the activation is applied in place when no
    gradient flows through it (inference, frozen image towers), saving two activation-sized tensors
    per layer: about 10% of a ViT-B/16 image forward on a CPU. Same values as ``mlp(x)``."""
    h = mlp.c_fc(x)
    if isinstance(mlp.gelu, QuickGELU) and not h.requires_grad:
        h = h.mul_(torch.sigmoid_(h * 1.702))
    else:
        h = mlp.gelu(h)
    return mlp.c_proj(h)


def _residual_add(x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """``x + update``, written into `update` (a fresh result) when no gradient needs either."""
    if update.requires_grad or x.requires_grad or update.dtype != x.dtype:
        return x + update
    return update.add_(x)


def length_groups(eot_index: Sequence[int], max_groups: int = 4, min_rows: int = 32) -> list[tuple[list[int], int]]:
    """Rows grouped by EOT position so that each group runs only up to its own longest prompt.

    Returns ``[(rows, length)]``, lengths increasing, minimising the positions run
    (sum of rows x length) with at most `max_groups` groups of at least `min_rows` rows each
    (per-group overheads make smaller groups not worth it); one group when there are fewer rows.
    """
    lengths = sorted({e + 1 for e in eot_index})
    counts = [0] * len(lengths)
    slot = {value: i for i, value in enumerate(lengths)}
    for e in eot_index:
        counts[slot[e + 1]] += 1
    rows_before = [0]
    for count in counts:
        rows_before.append(rows_before[-1] + count)
    m, total = len(lengths), rows_before[-1]
    # cost[g][j]: fewest positions to run the rows of the first j lengths in g groups; cut[g][j]: where the last starts.
    inf = float("inf")
    cost = [[inf] * (m + 1) for _ in range(max_groups + 1)]
    cut = [[0] * (m + 1) for _ in range(max_groups + 1)]
    cost[0][0] = 0
    for g in range(1, max_groups + 1):
        for j in range(1, m + 1):
            for i in range(j):
                rows = rows_before[j] - rows_before[i]
                if rows < min_rows and rows != total:
                    continue
                candidate = cost[g - 1][i] + rows * lengths[j - 1]
                if candidate < cost[g][j]:
                    cost[g][j], cut[g][j] = candidate, i
    best = min(range(1, max_groups + 1), key=lambda g: (cost[g][m], g)) if m else 0
    bounds, j = [], m
    for g in range(best, 0, -1):
        bounds.append((cut[g][j], j))
        j = cut[g][j]
    order = sorted(range(total), key=lambda r: eot_index[r])
    return [(order[rows_before[i] : rows_before[j]], lengths[j - 1]) for i, j in reversed(bounds)]


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

        Positions after ``max(eot_index)`` are never run. With many prompts of different lengths
        the rows are encoded in a few groups of similar length (`length_groups`), each run only
        up to its own longest prompt: exact, and up to about twice cheaper for real class names.
        A `length` beyond ``max(eot_index) + 1`` is honoured: all rows run that many positions.
        """
        eot = eot_index.tolist()  # a device sync on GPU; the grouping needs the positions on the host
        top = max(eot) + 1 if eot else 1
        length = top if length is None else length
        if length > embeds.shape[1]:
            raise ValueError(f"eot_index reaches position {length - 1}, beyond the {embeds.shape[1]} positions given")
        groups = length_groups(eot) if length == top else []
        if len(groups) < 2:
            return self.encode_group(embeds, eot_index, length)
        parts, order = [], []
        for rows, group_length in groups:
            index = torch.tensor(rows, device=embeds.device)
            parts.append(
                self.encode_group(embeds.index_select(0, index), eot_index[index.to(eot_index.device)], group_length)
            )
            order += rows
        features = torch.cat(parts)
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return features[inverse.to(features.device)]

    def encode_group(self, embeds: torch.Tensor, eot_index: torch.Tensor, length: int) -> torch.Tensor:
        """Features of prompts `embeds` [n, >= length, width] running only their first `length` positions."""
        x = embeds[:, :length].to(self.dtype)
        x = x + self.positional_embedding[:length].to(x.dtype)
        x = x.permute(1, 0, 2).contiguous()  # CLIP's blocks take [seq, batch, width]
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
        return self.forward(embeds, eot_index)

    def encode_texts(self, texts: Sequence[str], truncate: bool = True, batch_size: int = 1024) -> torch.Tensor:
        """Features of plain sentences, tokenized once with `clip.tokenize` and encoded in batches."""
        token_ids = clip.tokenize(list(texts), context_length=self.context_length, truncate=truncate)
        chunks = [
            self.encode_token_ids(token_ids[i : i + batch_size]) for i in range(0, token_ids.shape[0], batch_size)
        ]
        if not chunks:
            return self.text_projection.new_zeros(0, self.text_projection.shape[1])
        return torch.cat(chunks)
