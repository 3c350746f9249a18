"""Contrastive pretraining of a tiny ``clip.model.CLIP`` on the toy world, deterministic from the recipe's seed.

The token embedding is trained only over the tokens the grammar can produce (a few hundred of CLIP's 49408),
with the tokens renumbered in id order so the end-of-text token keeps the largest id (CLIP finds EOT by argmax).
``expand_state_dict`` writes the rows back at their real ids, zeros elsewhere, so the saved model is an ordinary
CLIP state dict that ``MODEL.BACKBONE.PATH`` loads. ``compact_weights`` / ``expand_compact`` convert to and from
the fp16, used-rows-only form committed with the package.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from clip.model import CLIP

from anchoropt.backbone.text_encoder import TextEncoder
from anchoropt.prompts.layout import clip_tokenizer, eot_token_id, sot_token_id
from anchoropt.toyworld import grammar
from anchoropt.toyworld.grammar import COLOURS, PATTERNS, SHAPES, Scene
from anchoropt.toyworld.render import render

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # the normalisation the toolkit's configs apply (INPUT.PIXEL_MEAN)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FULL_VOCAB = 49408
CONTEXT_LENGTH = 77  # the toolkit's prompts and CLIP's tokenizer assume 77; positions past ~32 stay untrained


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the pretrained weights. Change ``version`` whenever a field changes."""

    version: str = "toyworld-v1"
    seed: int = 0
    steps: int = 2000  # length of the LR schedule (warm-up, cosine)
    stop_step: int = 800  # stop after this many steps (0: at ``steps``): what the shipped run could afford
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    pool_size: int = 48000  # images drawn once; captions are drawn fresh every step
    image_size: int = 32
    caption_length: int = 32  # tokens (with SOS/EOT) a pretraining caption is cut to
    style_probs: dict = field(
        default_factory=lambda: {"photo": 0.8, "sketch": 0.05, "clutter": 0.05, "pixel": 0.05, "faded": 0.05}
    )
    model: dict = field(
        default_factory=lambda: dict(
            embed_dim=128,
            image_resolution=32,
            vision_layers=3,
            vision_width=128,
            vision_patch_size=8,
            context_length=CONTEXT_LENGTH,
            transformer_width=128,
            transformer_heads=2,
            transformer_layers=3,
        )
    )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        return cls(**json.loads(text))


def used_token_ids(extra_texts: tuple[str, ...] = ()) -> list[int]:
    """Sorted BPE ids of every token the grammar can produce (plus SOS/EOT): the rows worth training and keeping."""
    tokenizer = clip_tokenizer()
    rng = random.Random(0)
    texts = grammar.vocabulary_texts() + list(extra_texts)
    # Captions and descriptions are sampled too: BPE merges depend on the whole word, not on the word lists alone.
    for _ in range(4000):
        texts.append(
            grammar.caption(
                _random_scene(rng, {"photo": 0.5, "sketch": 0.1, "clutter": 0.1, "pixel": 0.1, "faded": 0.2}), rng
            )
        )
    for p in (None, *[p.name for p in PATTERNS]):
        for c in (None, *[c.name for c in COLOURS]):
            for s in SHAPES:
                texts += grammar.describe(grammar.class_name(c, s.name, p), 12)
    ids = {sot_token_id(), eot_token_id()}
    for t in texts:
        ids.update(tokenizer.encode(t))
    return sorted(ids)


def _random_scene(rng: random.Random, style_probs: dict) -> Scene:
    size = rng.choices(("small", "large", ""), (0.25, 0.25, 0.5))[0]
    style = rng.choices(list(style_probs), list(style_probs.values()))[0]
    return Scene(rng.choice(COLOURS).name, rng.choice(SHAPES).name, rng.choice(PATTERNS).name, size, style)


def image_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [n, H, W, 3] -> normalised float [n, 3, H, W] (as the toolkit's ``normalize`` transform)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class CaptionTokens:
    """Captions -> compact token ids [n, caption_length] (ids renumbered into the trained rows)."""

    def __init__(self, token_ids: list[int], length: int) -> None:
        self.tokenizer = clip_tokenizer()
        self.index = {t: i for i, t in enumerate(token_ids)}
        self.length = length
        self.sot, self.eot = self.index[sot_token_id()], self.index[eot_token_id()]

    def __call__(self, captions: list[str]) -> torch.Tensor:
        out = torch.zeros(len(captions), self.length, dtype=torch.long)
        for row, text in enumerate(captions):
            ids = [self.index[t] for t in self.tokenizer.encode(text)][: self.length - 2]
            out[row, : len(ids) + 2] = torch.tensor([self.sot, *ids, self.eot])
        return out


def pretrain(
    recipe: Recipe,
    log: Optional[Callable[[str], None]] = print,
    snapshot: Optional[Callable[[int, dict, list[int]], None]] = None,
    snapshot_every: int = 200,
) -> dict:
    """Pretrain from ``recipe``; returns the full-vocabulary fp32 CLIP state dict.

    ``snapshot(step, compact_state, token_ids)`` is called every ``snapshot_every`` steps (progress safety net).
    """
    log = log or (lambda _: None)
    started = time.time()
    torch.manual_seed(recipe.seed)
    rng = random.Random(recipe.seed)
    token_ids = used_token_ids()
    model = CLIP(vocab_size=len(token_ids), **recipe.model).float()
    text_encoder = TextEncoder(model)
    tokens = CaptionTokens(token_ids, recipe.caption_length)
    scenes = [_random_scene(rng, recipe.style_probs) for _ in range(recipe.pool_size)]
    images = np.stack([np.asarray(render(s, rng, recipe.image_size)) for s in scenes])
    log(
        f"toy world pretraining: {len(token_ids)} tokens, {recipe.pool_size} images drawn in "
        f"{time.time() - started:.1f}s; {recipe.stop_step or recipe.steps} steps of batch {recipe.batch_size}"
    )
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": other, "weight_decay": 0.0}],
        lr=recipe.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    generator = torch.Generator().manual_seed(recipe.seed)
    model.train()
    for step in range(recipe.stop_step or recipe.steps):
        warmup = min(1.0, (step + 1) / recipe.warmup_steps)
        lr = recipe.lr * warmup * 0.5 * (1 + math.cos(math.pi * step / recipe.steps))
        for group in optim.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, recipe.pool_size, (recipe.batch_size,), generator=generator)
        x = image_tensor(images[idx.numpy()])
        text = tokens([grammar.caption(scenes[i], rng) for i in idx.tolist()])
        img_f = F.normalize(model.encode_image(x), dim=-1)
        txt_f = F.normalize(text_encoder.encode_token_ids(text), dim=-1)
        logits = model.logit_scale.exp() * img_f @ txt_f.t()
        target = torch.arange(len(idx))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if snapshot is not None and (step + 1) % snapshot_every == 0:
            snapshot(step + 1, model.state_dict(), token_ids)
        if step % 50 == 0 or step == (recipe.stop_step or recipe.steps) - 1:
            log(
                f"step {step + 1}/{recipe.steps} loss {loss.item():.4f} lr {lr:.2e} "
                f"scale {model.logit_scale.exp().item():.1f} ({time.time() - started:.0f}s)"
            )
    model.eval()
    state = expand_state_dict(model.state_dict(), token_ids)
    log(f"toy world pretraining done in {time.time() - started:.0f}s")
    return state


def expand_state_dict(state: dict[str, torch.Tensor], token_ids: list[int]) -> dict[str, torch.Tensor]:
    """A compact-vocabulary state dict with the token rows put back at their CLIP ids (zeros elsewhere), fp32."""
    out = {k: v.detach().float().clone() for k, v in state.items()}
    compact = out["token_embedding.weight"]
    full = torch.zeros(FULL_VOCAB, compact.shape[1])
    full[torch.tensor(token_ids)] = compact
    out["token_embedding.weight"] = full
    return out


def compact_weights(state: dict[str, torch.Tensor], token_ids: list[int], recipe: Recipe) -> dict:
    """The small committed form: fp16 tensors, only the used token rows, plus the ids and the recipe."""
    small = {k: v.half() for k, v in state.items()}
    small["token_embedding.weight"] = state["token_embedding.weight"][torch.tensor(token_ids)].half()
    return {"state_dict": small, "token_ids": torch.tensor(token_ids), "recipe": recipe.to_json()}


def expand_compact(blob: dict) -> dict[str, torch.Tensor]:
    """The full fp32 CLIP state dict of a ``compact_weights`` blob."""
    return expand_state_dict(blob["state_dict"], blob["token_ids"].tolist())
