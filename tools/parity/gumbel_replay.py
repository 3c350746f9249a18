"""Replay recorded Gumbel noise through ``torch.nn.functional.gumbel_softmax``.

The official code and ours both draw the position matrix with ``F.gumbel_softmax``; replacing it
for the duration of a step with one that adds given noise (in call order) makes the two draw the
same P. The arithmetic is torch's own (``softmax((logits + g) / tau)``, then the straight-through
one-hot ``y_hard - y_soft.detach() + y_soft``), so only the source of the noise changes.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F


@contextlib.contextmanager
def replay_gumbel(noise: Sequence[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """Within the block, the i-th ``F.gumbel_softmax`` call uses ``noise[i]``; yields the list of calls' P."""
    queue = list(noise)
    drawn: list[torch.Tensor] = []
    original = F.gumbel_softmax

    def replayed(logits: torch.Tensor, tau: float = 1.0, hard: bool = False, eps: float = 1e-10, dim: int = -1):
        if not queue:
            raise RuntimeError(f"gumbel_softmax called more often than the {len(noise)} recorded noise samples")
        gumbels = (logits + queue.pop(0).to(logits)) / tau
        y_soft = gumbels.softmax(dim)
        if not hard:
            result = y_soft
        else:
            index = y_soft.max(dim, keepdim=True)[1]
            y_hard = torch.zeros_like(logits, memory_format=torch.legacy_contiguous_format).scatter_(dim, index, 1.0)
            result = y_hard - y_soft.detach() + y_soft
        drawn.append(result.detach().clone())
        return result

    F.gumbel_softmax = replayed
    try:
        yield drawn
    finally:
        F.gumbel_softmax = original
    if queue:
        raise RuntimeError(f"{len(queue)} recorded noise samples were not used")
