"""The REFERENCE paths: what the official AnchorOPT code computes, written on top of our modules.

Each reference differs from our path only in the work the official implementation does and we
avoid (DESIGN.md §3 and §6 items 7, 9):

- text prompts are padded to CLIP's 77 positions and all of them go through CLIP's own text
  transformer (its stock blocks and 77x77 mask), with ``ln_final`` on every position;
- Stage II recomputes the anchor branch's text features at every training step and, like
  the official ``test()``, both branches' text features for every test batch;
- MaPLe + AnchorOPT runs the deep-prompted text encoder over all 77 positions (our deep-prompt
  blocks, the official model's modified copy of CLIP does the same work);
- Stage I encodes every training batch's images without using them, and encodes the
  descriptions once with a second CLIP whose weights require gradients, outside ``no_grad``, so
  every step back-propagates through that whole graph (``retain_graph=True``), accumulating
  gradients in the second CLIP's weights.

Losses, position sampling and optimisers are the same objects as our path's, so with equal
seeds both paths compute the same numbers (tests/test_bench_smoke.py checks it).
"""

from __future__ import annotations

import copy
from typing import Sequence

import clip
import torch
import torch.nn.functional as F
from clip.model import CLIP

from anchoropt.backbone import Precision, TextEncoder
from anchoropt.method.losses import anchoropt_loss
from anchoropt.models.clip_parts import normalize, scaled_logits
from anchoropt.models.deep_prompts import DeepPromptTextEncoder, DeepSlots
from bench.setups import Stage1Setup, Stage2Setup


def pad_to_context(embeds: torch.Tensor, token_embedding: torch.nn.Embedding, context_length: int) -> torch.Tensor:
    """Prompt embeddings [n, L, width] padded to [n, context_length, width] with the embedding of
    token 0, which is what follows EOT in a `clip.tokenize` row (the official prompts are 77 long)."""
    missing = context_length - embeds.shape[1]
    if missing <= 0:
        return embeds
    pad = token_embedding.weight[0].to(embeds.dtype).expand(embeds.shape[0], missing, -1)
    return torch.cat([embeds, pad], dim=1)


class FullLengthTextEncoder(TextEncoder):
    """The official text encoder: all 77 positions through CLIP's own ``transformer``, ``ln_final`` on each."""

    def __init__(self, clip_model: CLIP) -> None:
        super().__init__(clip_model)
        self.transformer = clip_model.transformer

    def forward(self, embeds: torch.Tensor, eot_index: torch.Tensor, length: int | None = None) -> torch.Tensor:
        x = pad_to_context(embeds, self.token_embedding, self.context_length).to(self.dtype)
        x = x + self.positional_embedding.to(x.dtype)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x).to(self.dtype)
        return x[torch.arange(x.shape[0], device=x.device), eot_index.to(x.device)] @ self.text_projection


class FullLengthDeepTextEncoder(DeepPromptTextEncoder):
    """The deep-prompted text encoder over all 77 positions (MaPLe's official text encoder does not truncate)."""

    def forward(
        self, embeds: torch.Tensor, eot_index: torch.Tensor, length: int | None = None, deep: DeepSlots | None = None
    ) -> torch.Tensor:
        full = pad_to_context(embeds, self.token_embedding, self.context_length)
        return super().forward(full, eot_index, self.context_length, deep)


class ReferenceStageII:
    """The official Stage II forward (CoOp + AnchorOPT or MaPLe + AnchorOPT) and step, on a built `Stage2Setup`."""

    def __init__(self, setup: Stage2Setup, clip_model: CLIP, precision: Precision) -> None:
        self.setup = setup
        self.precision = precision
        self.deep = hasattr(setup.learner, "compound_prompts_text")
        self.plain_text = FullLengthTextEncoder(clip_model)
        self.deep_text = FullLengthDeepTextEncoder(clip_model) if self.deep else None
        self.visual = clip_model.visual
        self.logit_scale = clip_model.logit_scale

    @property
    def device(self) -> torch.device:
        return self.precision.device

    def branch_logits(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(normal, anchor) logits; both text branches encoded now, as in the official ``forward``."""
        learner = self.setup.learner
        with torch.no_grad():
            embeds, eot = learner.anchor_prompts()
            anchor_text = normalize(self.plain_text(embeds, eot))
        if self.deep:
            prompts = learner.text_prompts()
            normal_text = normalize(self.deep_text(prompts.embeds, prompts.eot_index, deep=prompts.deep))
            normal_image = self.setup.model.image_features(image)  # prompted (MaPLe's vision prompts)
        else:
            embeds, index = learner()
            normal_text = normalize(self.plain_text(embeds, index))
            normal_image = None
        plain_image = normalize(self.visual(image.to(self.visual.conv1.weight.dtype)))
        if normal_image is None:
            normal_image = plain_image
        return (
            scaled_logits(normal_image, normal_text, self.logit_scale),
            scaled_logits(plain_image, anchor_text, self.logit_scale),
        )

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        image, label = images.to(self.device), labels.to(self.device)
        s = self.setup.settings
        with self.precision.autocast():
            normal, anchor = self.branch_logits(image)
            loss, _ = anchoropt_loss(normal, anchor, label, s.ce_weight, s.kd_weight, s.kd_temperature)
        self.precision.backward_and_step(loss, self.setup.optimizer)
        return {"loss": loss.item()}

    @torch.no_grad()
    def evaluation_batch(self, images: torch.Tensor) -> torch.Tensor:
        """One test batch of unseen classes: both branches' text re-encoded, ensemble of the two."""
        self.setup.learner.eval()
        with self.precision.autocast():
            normal, anchor = self.branch_logits(images.to(self.device))
        return ((normal + anchor) / 2).float()


class ReferenceStageI:
    """The official Stage I: description features from a second, gradient-tracking CLIP; images encoded each step."""

    def __init__(self, setup: Stage1Setup, clip_model: CLIP, precision: Precision) -> None:
        self.setup = setup
        self.precision = precision
        self.clip_model = clip_model
        self.text = FullLengthTextEncoder(clip_model)
        self.description_features: torch.Tensor | None = None
        self.second_clip: CLIP | None = None

    @property
    def device(self) -> torch.device:
        return self.precision.device

    def encode(self, descriptions: Sequence[Sequence[str]]) -> None:
        """Per class, ``encode_text`` of its (77-token) sentences on a second CLIP requiring grad, no ``no_grad``."""
        self.second_clip = copy.deepcopy(self.clip_model).requires_grad_(True)
        features = []
        with self.precision.autocast():
            for sentences in descriptions:
                tokens = clip.tokenize(list(sentences), truncate=True).to(self.device)
                features.append(normalize(self.second_clip.encode_text(tokens)))
        self.description_features = torch.stack(features)  # [C, K, e], holding the whole graph

    def train_step(self, images: torch.Tensor) -> dict:
        learner = self.setup.learner
        mse_weight = self.setup.settings.mse_weight
        with self.precision.autocast():
            image_features = normalize(self.visual_features(images.to(self.device)))
            embeds, eot = learner()
            anchor_text = normalize(self.text(embeds, eot))
            scaled_logits(image_features, anchor_text, self.clip_model.logit_scale)  # computed, never used
            target = self.description_features
            loss = mse_weight * F.mse_loss(anchor_text.unsqueeze(1).expand_as(target), target.float())
        optimizer = self.setup.optimizer
        optimizer.zero_grad()
        loss.backward(retain_graph=True)  # through the description graph as well, every step
        optimizer.step()
        return {"loss": loss.item()}

    def visual_features(self, images: torch.Tensor) -> torch.Tensor:
        visual = self.clip_model.visual
        return visual(images.to(visual.conv1.weight.dtype))
