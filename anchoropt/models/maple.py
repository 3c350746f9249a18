"""MaPLe (Khattak et al., CVPR 2023): multi-modal deep prompts coupled text -> vision.

- Text: K learned context vectors in the input prompt ("shallow"), and for each layer
  ``i = 1 .. depth-1`` a learned compound prompt ``V_i`` [K, text width] that replaces the
  K context slots (positions 1..K) at that layer's input.
- Vision: the text prompts projected to the vision width: ``proj(ctx)`` appended after
  the patch tokens at the input, ``proj_i(V_i)`` (one Linear per deeper layer) replacing
  them at layer i.

Parameter names follow MaPLe's (``ctx``, ``proj``, ``compound_prompts_text``,
``compound_prompt_projections``). Widths are read from the CLIP, so any ViT CLIP works.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
from clip.model import CLIP
from torch import nn

from anchoropt.backbone import model_dims
from anchoropt.errors import ConfigError
from anchoropt.models.clip_parts import normalize, scaled_logits
from anchoropt.models.deep_prompts import DeepPromptTextEncoder, DeepSlots, PromptedImageEncoder
from anchoropt.prompts.context import ContextInit, init_context
from anchoropt.prompts.layout import PromptLayout, clip_tokenizer, encode_words

DEPTH_KEY = "TRAINER.MAPLE.PROMPT_DEPTH"


@dataclass
class TextPrompts:
    """Input prompt embeddings [n_cls, L, width], EOT positions [n_cls], length to run, and deep slots."""

    embeds: torch.Tensor
    eot_index: torch.Tensor
    length: int
    deep: DeepSlots | None


@dataclass
class VisionPrompts:
    """Prompts appended after the patch tokens ([K, vision width]) and their deep slots."""

    shallow: torch.Tensor
    deep: DeepSlots | None


def maple_context(token_embedding: nn.Embedding, n_ctx: int, ctx_init: str) -> tuple[ContextInit, str]:
    """MaPLe's context initialisation: the learned vectors and the words kept as fixed text after them.

    With ``CTX_INIT = "a photo of a"`` and ``N_CTX = 2`` MaPLe learns "a photo" and keeps
    "of a" as fixed words: the prompt is ``[SOS] ctx_1 ctx_2 of a <class>. [EOS]``. When
    the phrase has fewer than N_CTX tokens (MaPLe's rule: N_CTX > 4), the context is
    random N(0, 0.02²) and the phrase is not used.
    """
    if n_ctx < 1:
        raise ConfigError(f"N_CTX must be at least 1 for MaPLe prompts, got {n_ctx}")
    phrase = ctx_init.replace("_", " ").strip()
    ids = encode_words(phrase) if phrase else []
    if phrase and n_ctx <= len(ids):
        words = init_context(token_embedding, n_ctx, phrase)
        rest = clip_tokenizer().decode(ids[n_ctx:]).strip()
        return ContextInit(vectors=words.vectors[:n_ctx].clone(), prefix=phrase), rest
    if phrase:
        print(f"CTX_INIT={ctx_init!r} has {len(ids)} tokens, fewer than N_CTX={n_ctx}: random context instead")
    return init_context(token_embedding, n_ctx, ""), ""


def check_prompt_depth(depth: int, clip_model: CLIP, vision_prompts: bool = True) -> None:
    dims = model_dims(clip_model)
    if vision_prompts and not dims.is_vit:
        raise ConfigError("MaPLe's vision prompts need a ViT CLIP backbone (MODEL.BACKBONE.NAME ViT-*), not a ResNet")
    layers = dims.text_layers if not vision_prompts else min(dims.text_layers, dims.vision_layers)
    if not 1 <= depth <= layers:
        raise ConfigError(
            f"{DEPTH_KEY}={depth}: expected 1..{layers} (the number of prompted transformer layers "
            f"of this CLIP; 1 = input layer only)"
        )


class CompoundPrompts:
    """Mixin for a prompt-learner module holding soft context ``ctx`` [K, text width]: MaPLe's deeper prompts.

    `init_compound_prompts` adds ``compound_prompts_text[i-1]`` [K, text width], the text
    prompts of layer i (1 <= i < depth), and the projections giving the vision prompts:
    ``proj(ctx)`` at the input and ``compound_prompt_projections[i-1](V_i)`` at layer i.
    ``vision_prompts=False`` leaves the image encoder unprompted (language-only prompting).
    Learners implement ``text_prompts() -> TextPrompts``; `MaPLeCLIP` drives both towers.
    """

    ctx: nn.Parameter
    prompt_depth: int = 1

    def init_compound_prompts(self, clip_model: CLIP, prompt_depth: int, vision_prompts: bool = True) -> None:
        check_prompt_depth(prompt_depth, clip_model, vision_prompts)
        dims = model_dims(clip_model)
        n_ctx, device = self.ctx.shape[-2], self.ctx.device
        self.prompt_depth = prompt_depth
        compound = []
        for _ in range(prompt_depth - 1):
            vectors = torch.empty(n_ctx, dims.text_width, device=device)
            nn.init.normal_(vectors, std=0.02)
            compound.append(nn.Parameter(vectors))
        self.compound_prompts_text = nn.ParameterList(compound)
        if vision_prompts:
            self.proj = nn.Linear(dims.text_width, dims.vision_width).to(device)
            # MaPLe clones one initialised layer, so every deep projection starts from the same weights.
            layer = nn.Linear(dims.text_width, dims.vision_width).to(device)
            self.compound_prompt_projections = nn.ModuleList(copy.deepcopy(layer) for _ in range(prompt_depth - 1))
        else:
            self.proj = None
            self.compound_prompt_projections = nn.ModuleList()

    @property
    def has_vision_prompts(self) -> bool:
        return self.proj is not None

    def compound_text(self, layer: int) -> torch.Tensor | None:
        """The learned text prompt of layer ``layer`` (1 <= layer < depth), else None."""
        if 1 <= layer < self.prompt_depth:
            return self.compound_prompts_text[layer - 1]
        return None

    def vision_prompts(self) -> VisionPrompts | None:
        if self.proj is None:
            return None
        deep_vision = [
            project(prompt) for project, prompt in zip(self.compound_prompt_projections, self.compound_prompts_text)
        ]
        deep = None
        if deep_vision:
            deep = DeepSlots(start=-self.ctx.shape[-2], provider=_layer_list_provider(deep_vision))
        return VisionPrompts(shallow=self.proj(self.ctx), deep=deep)

    def text_prompts(self) -> TextPrompts:
        raise NotImplementedError


def _layer_list_provider(per_layer: list[torch.Tensor]):
    """A slot provider giving ``per_layer[i-1]`` at layer i while there are entries."""

    def provide(layer: int, hidden: torch.Tensor) -> torch.Tensor | None:
        return per_layer[layer - 1] if layer - 1 < len(per_layer) else None

    return provide


class MaPLePromptLearner(CompoundPrompts, nn.Module):
    """MaPLe's prompt: ``[SOS] ctx <rest of CTX_INIT> <class>. [EOS]`` plus the compound prompts.

    The state dict holds only learned tensors; class-dependent buffers are rebuilt from
    class names (`set_classnames`), so a model trained on base classes evaluates on new ones.
    """

    def __init__(
        self,
        clip_model: CLIP,
        classnames: Sequence[str],
        n_ctx: int = 2,
        ctx_init: str = "a photo of a",
        prompt_depth: int = 9,
        vision_prompts: bool = True,
    ) -> None:
        super().__init__()
        init, words_after = maple_context(clip_model.token_embedding, n_ctx, ctx_init)
        self.ctx = nn.Parameter(init.vectors)
        self.init_compound_prompts(clip_model, prompt_depth, vision_prompts)
        template = "{ctx} " + (words_after + " " if words_after else "") + "{class}."
        self.layout = PromptLayout(
            clip_model.token_embedding,
            classnames,
            template,
            n_ctx,
            context_length=clip_model.positional_embedding.shape[0],
        )
        print("MaPLe design: Multi-modal Prompt Learning")
        print(f'Initial context: "{init.prefix}"')
        print(f"Number of MaPLe context words (tokens): {n_ctx}; prompt depth {prompt_depth}")

    @property
    def n_ctx(self) -> int:
        return self.ctx.shape[0]

    def set_classnames(self, classnames: Sequence[str]) -> None:
        self.layout.set_class_names(classnames)

    def text_prompts(self) -> TextPrompts:
        deep = DeepSlots(start=1, provider=lambda layer, hidden: self.compound_text(layer))
        return TextPrompts(
            embeds=self.layout.assemble(self.ctx),
            eot_index=self.layout.eot_index,
            length=self.layout.length,
            deep=deep if self.prompt_depth > 1 else None,
        )


class MaPLeCLIP(nn.Module):
    """Frozen CLIP driven with a MaPLe-style prompt learner (a module with `CompoundPrompts`).

    ``forward(image, text_features)`` accepts precomputed class features so an evaluation
    encodes the (fixed) prompts once instead of once per batch.
    """

    def __init__(self, clip_model: CLIP, prompt_learner: nn.Module) -> None:
        super().__init__()
        self.prompt_learner = prompt_learner
        self.text_encoder = DeepPromptTextEncoder(clip_model)
        self.image_encoder = PromptedImageEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale

    def encode_text_prompts(self, prompts: TextPrompts) -> torch.Tensor:
        return normalize(self.text_encoder(prompts.embeds, prompts.eot_index, prompts.length, prompts.deep))

    def text_features(self) -> torch.Tensor:
        return self.encode_text_prompts(self.prompt_learner.text_prompts())

    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        vision = self.prompt_learner.vision_prompts()
        if vision is None:
            return self.image_encoder(image)
        return self.image_encoder(image, vision.shallow, vision.deep)

    def forward(self, image: torch.Tensor, text_features: torch.Tensor | None = None) -> torch.Tensor:
        if text_features is None:
            text_features = self.text_features()
        return scaled_logits(self.image_features(image), text_features, self.logit_scale)
