"""Vectorised prompt assembly: fixed token embeddings per class plus K learnable slots.

A template such as ``"{ctx} {class}."`` is tokenized once per class into the token sequence
``[SOS] slot_0 .. slot_{K-1} <class tokens> . [EOS]``. `PromptLayout.assemble` fills the slots
with context vectors for all classes at once (gather + where, no loop over classes).

Template placeholders:
- ``{class}``: the class name (underscores become spaces, as in CoOp);
- ``{ctx}``: all K slots; ``{ctx_head}`` / ``{ctx_tail}``: the first K//2 / remaining slots;
  ``{ctx:n}``: the next n slots. Slots are numbered in order of appearance and must total K.

Text between slots is tokenized as one piece (including the class name), so a prompt's tokens
equal those of ``clip.tokenize`` on the sentence with "X" written for each slot.
"""

from __future__ import annotations

import functools
import re
from typing import Sequence

import torch
from clip.simple_tokenizer import SimpleTokenizer
from torch import nn

from anchoropt.errors import ConfigError

# The templates of CoOp's CLASS_TOKEN_POSITION values, and AnchorOPT's anchor prompt.
CLASS_TOKEN_POSITION_TEMPLATES = {
    "end": "{ctx} {class}.",
    "middle": "{ctx_head} {class} {ctx_tail}.",
    "front": "{class} {ctx}.",
}
ANCHOR_TEMPLATE = "{ctx} of {class}."

_PLACEHOLDER = re.compile(r"\{(class|ctx|ctx_head|ctx_tail|ctx:\d+)\}")


@functools.lru_cache(maxsize=1)
def clip_tokenizer() -> SimpleTokenizer:
    """CLIP's BPE tokenizer, created on first use."""
    return SimpleTokenizer()


def sot_token_id() -> int:
    return clip_tokenizer().encoder["<|startoftext|>"]


def eot_token_id() -> int:
    return clip_tokenizer().encoder["<|endoftext|>"]


def encode_words(text: str) -> list[int]:
    """BPE token ids of `text`, without SOS/EOT (CLIP's tokenizer lower-cases and cleans it)."""
    return clip_tokenizer().encode(text)


def clean_class_name(name: str) -> str:
    return name.replace("_", " ")


def template_for_position(position: str) -> str:
    """The template for CoOp's ``CLASS_TOKEN_POSITION`` (end / middle / front)."""
    if position not in CLASS_TOKEN_POSITION_TEMPLATES:
        raise ConfigError(
            f"CLASS_TOKEN_POSITION={position!r} is not supported; expected one of "
            f"{', '.join(CLASS_TOKEN_POSITION_TEMPLATES)}"
        )
    return CLASS_TOKEN_POSITION_TEMPLATES[position]


def prompt_token_sequence(template: str, class_name: str, n_ctx: int) -> tuple[list[int], list[int]]:
    """Token ids and slot numbers (-1 for fixed tokens) of one class's prompt, SOS..EOT included.

    Slot positions hold a placeholder id (0); only the slot numbers matter there.
    """
    pieces = _PLACEHOLDER.split(template)  # text, name, text, name, ..., text
    tokens = [sot_token_id()]
    slots = [-1]
    text = ""
    next_slot = 0
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            text += piece
            continue
        if piece == "class":
            text += clean_class_name(class_name)
            continue
        count = _slot_count(piece, n_ctx)
        if count == 0:
            continue
        ids = encode_words(text)
        tokens += ids + [0] * count
        slots += [-1] * len(ids) + list(range(next_slot, next_slot + count))
        text = ""
        next_slot += count
    ids = encode_words(text)
    tokens += ids + [eot_token_id()]
    slots += [-1] * (len(ids) + 1)
    if next_slot != n_ctx:
        raise ConfigError(f"prompt template {template!r} has {next_slot} context slots, expected {n_ctx}")
    return tokens, slots


def _slot_count(placeholder: str, n_ctx: int) -> int:
    if placeholder == "ctx":
        return n_ctx
    if placeholder == "ctx_head":
        return n_ctx // 2
    if placeholder == "ctx_tail":
        return n_ctx - n_ctx // 2
    return int(placeholder.split(":")[1])


def render_prompt(template: str, class_name: str, n_ctx: int, slot_word: str = "X") -> str:
    """The prompt as text, with `slot_word` for each slot (for logs)."""

    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name == "class":
            return clean_class_name(class_name)
        return " ".join([slot_word] * _slot_count(name, n_ctx))

    return _PLACEHOLDER.sub(fill, template)


class PromptLayout(nn.Module):
    """Per-class fixed token embeddings and slot map for one template; fills slots with context.

    Buffers (all non-persistent, so checkpoints of prompt learners never hold class-dependent
    tensors and a model trained on some classes can be evaluated on others):
    ``token_ids`` [n_cls, L], ``fixed_embeds`` [n_cls, L, width], ``slot_index`` [n_cls, L]
    (-1 for fixed tokens, else the slot number), ``eot_index`` [n_cls]. ``L = max EOT + 1``.
    ``token_ids`` holds 0 at slot positions and after EOT (EOT stays the largest id per row).

    `token_embedding` is CLIP's embedding module; it is referenced, not registered, so it is
    neither saved with nor moved by this module.
    """

    token_ids: torch.Tensor
    fixed_embeds: torch.Tensor
    slot_index: torch.Tensor
    eot_index: torch.Tensor

    def __init__(
        self,
        token_embedding: nn.Embedding,
        class_names: Sequence[str],
        template: str,
        n_ctx: int,
        context_length: int = 77,
    ) -> None:
        super().__init__()
        if n_ctx < 0:
            raise ConfigError(f"number of context tokens must be >= 0, got {n_ctx}")
        if "{class}" not in template:
            raise ConfigError(f"prompt template {template!r} has no {{class}} placeholder")
        self._token_embedding = (token_embedding,)  # a tuple hides it from nn.Module registration
        self.template = template
        self.n_ctx = n_ctx
        self.context_length = context_length
        self.class_names: list[str] = []
        self.length = 0
        self.set_class_names(class_names)

    @property
    def n_cls(self) -> int:
        return len(self.class_names)

    def set_class_names(self, class_names: Sequence[str]) -> None:
        """(Re)build the class-dependent buffers for `class_names`, on this module's device."""
        if len(class_names) == 0:
            raise ConfigError("a prompt layout needs at least one class name")
        sequences = [prompt_token_sequence(self.template, name, self.n_ctx) for name in class_names]
        too_long = [name for name, (tok, _) in zip(class_names, sequences) if len(tok) > self.context_length]
        if too_long:
            raise ConfigError(
                f"prompt {self.template!r} with {self.n_ctx} context tokens is longer than CLIP's "
                f"{self.context_length} tokens for class(es): {', '.join(map(repr, too_long))}"
            )
        length = max(len(tok) for tok, _ in sequences)
        token_ids = torch.zeros(len(sequences), length, dtype=torch.long)
        slot_index = torch.full((len(sequences), length), -1, dtype=torch.long)
        for row, (tok, slots) in enumerate(sequences):
            token_ids[row, : len(tok)] = torch.tensor(tok)
            slot_index[row, : len(slots)] = torch.tensor(slots)
        eot_index = torch.tensor([len(tok) - 1 for tok, _ in sequences])

        embedding = self._token_embedding[0]
        device = self._buffer_device(default=embedding.weight.device)
        with torch.no_grad():
            fixed = embedding(token_ids.to(embedding.weight.device)).detach()
        self.register_buffer("token_ids", token_ids.to(device), persistent=False)
        self.register_buffer("fixed_embeds", fixed.to(device), persistent=False)
        self.register_buffer("slot_index", slot_index.to(device), persistent=False)
        self.register_buffer("eot_index", eot_index.to(device), persistent=False)
        self.class_names = list(class_names)
        self.length = length

    def _buffer_device(self, default: torch.device) -> torch.device:
        current = getattr(self, "fixed_embeds", None)
        return current.device if isinstance(current, torch.Tensor) else default

    @property
    def prompts(self) -> list[str]:
        """Human-readable prompts, with "X" for each slot."""
        return [render_prompt(self.template, name, self.n_ctx) for name in self.class_names]

    def assemble(self, ctx: torch.Tensor, class_specific: bool = False) -> torch.Tensor:
        """Prompt embeddings with the slots filled from `ctx`.

        - shared context ``[*batch, K, width]`` -> ``[*batch, n_cls, L, width]``
          (``[K, width]`` gives ``[n_cls, L, width]``; ``[B, K, width]``, e.g. CoCoOp's per-image
          context, gives ``[B, n_cls, L, width]``);
        - ``class_specific=True``: ``[*batch, n_cls, K, width]`` -> ``[*batch, n_cls, L, width]`` (CSC).
        The output dtype is ctx's (fixed embeddings are cast to it).
        """
        k_dim = -2
        if ctx.shape[k_dim] != self.n_ctx or ctx.shape[-1] != self.fixed_embeds.shape[-1]:
            raise ValueError(
                f"context of shape {tuple(ctx.shape)} does not fit the layout: expected "
                f"[..., {self.n_ctx}, {self.fixed_embeds.shape[-1]}]"
            )
        fixed = self.fixed_embeds.to(ctx.dtype)
        is_slot = (self.slot_index >= 0).unsqueeze(-1)  # [n_cls, L, 1]
        index = self.slot_index.clamp(min=0)  # [n_cls, L]
        if class_specific:
            if ctx.dim() < 3 or ctx.shape[-3] != self.n_cls:
                raise ValueError(
                    f"class-specific context must be [..., {self.n_cls}, {self.n_ctx}, width], got {tuple(ctx.shape)}"
                )
            rows = torch.arange(self.n_cls, device=index.device).unsqueeze(1)  # [n_cls, 1]
            filled = ctx[..., rows, index, :]  # [*batch, n_cls, L, width]
        else:
            filled = ctx[..., index, :]  # [*batch, n_cls, L, width]
        return torch.where(is_slot, filled, fixed)

    def extra_repr(self) -> str:
        return f"template={self.template!r}, n_ctx={self.n_ctx}, n_cls={self.n_cls}, length={self.length}"
