"""Initial values of learnable context vectors, shared by every prompt-learning method."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from anchoropt.errors import ConfigError
from anchoropt.prompts.layout import encode_words


@dataclass
class ContextInit:
    """Initial context ``vectors`` ([K, width] or [n_cls, K, width], fp32, detached) and its text."""

    vectors: torch.Tensor
    prefix: str

    @property
    def n_ctx(self) -> int:
        return self.vectors.shape[-2]


def init_context(
    token_embedding: nn.Embedding,
    n_ctx: int,
    ctx_init: str = "",
    n_cls: int | None = None,
    std: float = 0.02,
    generator: torch.Generator | None = None,
) -> ContextInit:
    """Context vectors from the words `ctx_init`, or random N(0, std²) when it is empty.

    With `ctx_init` ("a photo of a"), K is the number of tokens of the phrase (`n_ctx` is then
    ignored, as in CoOp) and the vectors are those words' token embeddings. `n_cls` makes the
    context class-specific (CSC): [n_cls, K, width], every class starting from the same values
    when initialised from words. Random init draws from `generator` or the global RNG, so the
    run's seed decides it.
    """
    weight = token_embedding.weight
    width = weight.shape[1]
    phrase = ctx_init.replace("_", " ").strip()
    if phrase:
        ids = encode_words(phrase)
        if not ids:
            raise ConfigError(f"CTX_INIT={ctx_init!r} contains no tokens")
        with torch.no_grad():
            vectors = token_embedding(torch.tensor(ids, device=weight.device)).detach().float()
        if n_cls is not None:
            vectors = vectors.unsqueeze(0).expand(n_cls, -1, -1)
        return ContextInit(vectors=vectors.clone(), prefix=phrase)

    if n_ctx < 1:
        raise ConfigError(f"N_CTX must be at least 1 when CTX_INIT is empty, got {n_ctx}")
    shape = (n_ctx, width) if n_cls is None else (n_cls, n_ctx, width)
    vectors = torch.empty(shape, dtype=torch.float32, device=weight.device)
    nn.init.normal_(vectors, std=std, generator=generator)
    return ContextInit(vectors=vectors, prefix=" ".join(["X"] * n_ctx))
