"""DePT (Zhang et al., CVPR 2024): decoupled prompt tuning, here on CoOp's prompts.

Beside CLIP's similarity logits ``sim = s·cos(f_I(x), f_T(prompt_c))``, DePT trains a
classification head on channel-wise transformed ("FiLM": ``x·γ + β`` per channel, starting
as the identity) raw CLIP features:

- ``linear`` head (default): ``Linear(e -> trained classes)``, trained on the transformed image
  features and the transformed text features of the labels (both as samples, labels [y; y]);
  at test time it reads the transformed image features.
- ``similarity`` head: ``s·cos(FiLM_I(f_I(x)), FiLM_T(f_T(prompt_c)))``.

Loss: ``(1 − w)·CE(sim, y) + w·CE(head)``. Test time, per class: a class the head was trained
on scores ``(1 − w)·sim + w·head`` (``head`` alone without ``TEST_TIME_FUSION``); any other
class scores ``sim``. The head's rows belong to the trained class names (saved with the
checkpoint), so base, new, mixed and cross-dataset class sets are all scored by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from clip.model import CLIP
from torch import nn

from anchoropt.backbone import TextEncoder
from anchoropt.errors import CheckpointError, ConfigError
from anchoropt.method.names import normalize_classname
from anchoropt.models.clip_parts import ImageEncoder, normalize, scaled_logits
from anchoropt.models.coop import CoOpPromptLearner

HEAD_TYPES = ("linear", "similarity")
WEIGHT_KEY = "TRAINER.LINEAR_PROBE.WEIGHT"
TYPE_KEY = "TRAINER.LINEAR_PROBE.TYPE"


@dataclass(frozen=True)
class DePTSettings:
    """``TRAINER.LINEAR_PROBE`` and ``TRAINER.FILM`` as the DePT models use them, validated once."""

    head_type: str
    weight: float
    test_time_fusion: bool
    film: bool

    @classmethod
    def from_cfg(cls, cfg: Any) -> "DePTSettings":
        probe = cfg.TRAINER.LINEAR_PROBE
        settings = cls(
            head_type=str(probe.TYPE),
            weight=float(probe.WEIGHT),
            test_time_fusion=bool(probe.TEST_TIME_FUSION),
            film=bool(cfg.TRAINER.FILM.LINEAR_PROBE),
        )
        if settings.head_type not in HEAD_TYPES:
            raise ConfigError(
                f"{TYPE_KEY}={settings.head_type!r} is not supported; expected one of {', '.join(HEAD_TYPES)}"
            )
        if not 0.0 <= settings.weight <= 1.0:
            raise ConfigError(
                f"{WEIGHT_KEY} must be in [0, 1] (the head's share of loss and fused logits), got {settings.weight}"
            )
        return settings

    def head_options(self) -> dict[str, Any]:
        return {"head_type": self.head_type, "film": self.film}


class FeatureFiLM(nn.Module):
    """Channel-wise affine transform ``x·scale + bias``, the identity at initialisation."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype) + self.bias.to(x.dtype)


class DePTHead(nn.Module):
    """FiLM of image and text features (``film_image``, ``film_text``) and the classifier ``linear``.

    ``linear`` has one output per trained class; `match_checkpoint` resizes it to a
    checkpoint's, so a head trained on some classes loads into a model built for others.
    """

    def __init__(self, embed_dim: int, num_classes: int, head_type: str = "linear", film: bool = True) -> None:
        super().__init__()
        if head_type not in HEAD_TYPES:
            raise ConfigError(f"{TYPE_KEY}={head_type!r} is not supported; expected one of {', '.join(HEAD_TYPES)}")
        self.head_type = head_type
        self.film_image = FeatureFiLM(embed_dim) if film else nn.Identity()
        self.film_text = FeatureFiLM(embed_dim) if film else nn.Identity()
        self.linear = nn.Linear(embed_dim, num_classes) if head_type == "linear" else None

    @torch.no_grad()
    def match_checkpoint(self, state_dict: dict, prefix: str = "") -> None:
        """Give ``linear`` the number of classes stored in `state_dict` (same parameter objects)."""
        stored = state_dict.get(prefix + "linear.weight")
        if self.linear is None or stored is None or stored.shape == self.linear.weight.shape:
            return
        if stored.dim() != 2 or stored.shape[1] != self.linear.in_features:
            raise CheckpointError(
                f"DePT head in the checkpoint has shape {tuple(stored.shape)}; expected "
                f"[classes, {self.linear.in_features}] (the CLIP embedding width)"
            )
        weight, bias = self.linear.weight, self.linear.bias
        weight.set_(weight.new_zeros(stored.shape))
        bias.set_(bias.new_zeros(stored.shape[0]))
        self.linear.out_features = stored.shape[0]

    def training_logits(
        self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, logit_scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Head logits and their labels on raw features: image [B, e], class text [C, e]."""
        image, text = self.film_image(image), self.film_text(text)
        if self.linear is None:
            return scaled_logits(normalize(image), normalize(text), logit_scale), labels
        samples = torch.cat([text[labels], image])
        return self.linear(samples), torch.cat([labels, labels])

    def class_logits(
        self, image: torch.Tensor, text: torch.Tensor, columns: torch.Tensor, logit_scale: torch.Tensor
    ) -> torch.Tensor:
        """Head logits [B, C] for the current classes; ``columns`` [C] maps each to its head row (-1: none).

        Columns without a head row hold zeros (the scoring rule never reads them).
        """
        image = self.film_image(image)
        if self.linear is None:
            return scaled_logits(normalize(image), normalize(self.film_text(text)), logit_scale)
        logits = self.linear(image)
        aligned = logits[:, columns.clamp(min=0)]
        return torch.where(columns >= 0, aligned, torch.zeros_like(aligned))


def head_columns(classnames: Sequence[str], trained_classnames: Sequence[str] | None) -> torch.Tensor:
    """For each class, its index among the trained classes (matched by normalised name), or -1."""
    rows = {normalize_classname(name): i for i, name in enumerate(trained_classnames or [])}
    return torch.tensor([rows.get(normalize_classname(name), -1) for name in classnames], dtype=torch.long)


def fuse_logits(sim: torch.Tensor, head: torch.Tensor, columns: torch.Tensor, settings: DePTSettings) -> torch.Tensor:
    """Per class: head-trained columns ``(1 − w)·sim + w·head`` (``head`` without fusion), others ``sim``."""
    w = settings.weight
    seen_score = (1 - w) * sim + w * head if settings.test_time_fusion else head
    return torch.where((columns >= 0).to(sim.device), seen_score.to(sim.dtype), sim)


@dataclass
class DePTOutputs:
    """One pass of a DePT model: similarity logits, normalised image features, head logits (and labels)."""

    sim: torch.Tensor
    image_features: torch.Tensor
    head: torch.Tensor | None = None
    head_labels: torch.Tensor | None = None


class DePTScoring:
    """Mixin for CLIP models whose ``prompt_learner`` has a DePT ``head``.

    Needs ``image_encoder`` (`ImageEncoder`), ``logit_scale`` and ``raw_text_features()``
    (unnormalised class features [C, e]).
    """

    prompt_learner: nn.Module
    image_encoder: ImageEncoder
    logit_scale: torch.Tensor

    def raw_text_features(self) -> torch.Tensor:
        raise NotImplementedError

    def raw_image_features(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_encoder.raw(image)  # images, or their cached features

    def dept_outputs(
        self,
        image: torch.Tensor,
        text: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        columns: torch.Tensor | None = None,
    ) -> DePTOutputs:
        """Similarity logits, plus the head's training logits (given `labels`) or class logits (given `columns`).

        `text` is ``raw_text_features()`` computed beforehand (e.g. once per evaluation).
        """
        text = self.raw_text_features() if text is None else text
        image_raw = self.raw_image_features(image)
        image_features = normalize(image_raw)
        out = DePTOutputs(
            sim=scaled_logits(image_features, normalize(text), self.logit_scale), image_features=image_features
        )
        head = self.prompt_learner.head
        if labels is not None:
            out.head, out.head_labels = head.training_logits(image_raw, text.float(), labels, self.logit_scale)
        elif columns is not None:
            out.head = head.class_logits(image_raw, text.float(), columns.to(image_raw.device), self.logit_scale)
        return out


class DePTPromptLearner(CoOpPromptLearner):
    """CoOp's context (``ctx``) plus the DePT ``head``; the state dict holds only learned tensors."""

    def __init__(
        self,
        clip_model: CLIP,
        classnames: Sequence[str],
        n_ctx: int,
        ctx_init: str = "",
        csc: bool = False,
        class_token_position: str = "end",
        head_type: str = "linear",
        film: bool = True,
    ) -> None:
        super().__init__(clip_model, classnames, n_ctx, ctx_init, csc, class_token_position)
        embed_dim = int(clip_model.text_projection.shape[1])
        self.head = DePTHead(embed_dim, len(classnames), head_type, film).to(self.ctx.device)
        print(f"DePT head: {head_type} over {len(classnames)} classes, FiLM {'on' if film else 'off'}")


class DePTCLIP(DePTScoring, nn.Module):
    """Frozen CLIP with CoOp prompts and the DePT head."""

    def __init__(self, clip_model: CLIP, prompt_learner: DePTPromptLearner) -> None:
        super().__init__()
        self.prompt_learner = prompt_learner
        self.text_encoder = TextEncoder(clip_model)
        self.image_encoder = ImageEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale

    def raw_text_features(self) -> torch.Tensor:
        embeds, eot_index = self.prompt_learner()
        return self.text_encoder(embeds, eot_index, self.prompt_learner.layout.length).float()
