"""Interpretability of learned anchors: the vocabulary tokens whose embeddings lie closest.

The paper notes that learned anchors are not readable words; listing the nearest
tokens with their cosine similarity shows how far they are from any word.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from anchoropt.prompts.layout import clip_tokenizer


@dataclass(frozen=True)
class NearToken:
    token_id: int
    text: str
    cosine: float
    distance: float  # Euclidean distance between the anchor vector and the token embedding


def token_text(token_id: int) -> str:
    """The BPE token as text: a word-final token ("dog</w>") shows as "dog", a word piece as "energi-"."""
    tokenizer = clip_tokenizer()
    piece = tokenizer.decoder.get(int(token_id))
    if piece is None:
        return f"<{token_id}>"
    final = piece.endswith("</w>")
    piece = piece[: -len("</w>")] if final else piece
    text = bytearray(tokenizer.byte_decoder[c] for c in piece).decode("utf-8", errors="replace")
    return text if final else text + "-"


@torch.no_grad()
def nearest_vocabulary_tokens(
    anchor: torch.Tensor, token_embedding: torch.Tensor, top_k: int = 5
) -> list[list[NearToken]]:
    """For each anchor vector [N, d], the `top_k` vocabulary tokens by cosine similarity (embedding matrix [V, d])."""
    if anchor.dim() != 2 or token_embedding.dim() != 2 or anchor.shape[1] != token_embedding.shape[1]:
        raise ValueError(
            f"anchor [N, d] and token embedding [V, d] must share d, got {tuple(anchor.shape)} and "
            f"{tuple(token_embedding.shape)}"
        )
    vectors = anchor.detach().float()
    table = token_embedding.detach().float().to(vectors.device)
    cosine = F.normalize(vectors, dim=-1) @ F.normalize(table, dim=-1).t()
    values, ids = cosine.topk(min(top_k, table.shape[0]), dim=-1)
    result = []
    for row, (row_values, row_ids) in enumerate(zip(values.tolist(), ids.tolist())):
        distances = (table[row_ids] - vectors[row]).norm(dim=-1).tolist()
        result.append([NearToken(i, token_text(i), v, d) for i, v, d in zip(row_ids, row_values, distances)])
    return result


def format_nearest_tokens(nearest: list[list[NearToken]], anchor: torch.Tensor | None = None) -> str:
    """One line per anchor token, e.g. ``A1 (norm 0.71): 'dog' cos 0.21 dist 0.80, ...``."""
    lines = []
    for j, tokens in enumerate(nearest):
        norm = f" (norm {float(anchor[j].detach().float().norm()):.3f})" if anchor is not None else ""
        listed = ", ".join(f"{t.text!r} cos {t.cosine:.3f} dist {t.distance:.3f}" for t in tokens)
        lines.append(f"A{j + 1}{norm}: {listed}")
    return "\n".join(lines)


def nearest_tokens_record(nearest: list[list[NearToken]]) -> list[list[dict]]:
    """Plain values for results files."""
    return [
        [{"token": t.text, "id": t.token_id, "cosine": t.cosine, "distance": t.distance} for t in tokens]
        for tokens in nearest
    ]
