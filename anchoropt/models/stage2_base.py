"""Stage II pieces every AnchorOPT variant shares, and the contract its model must meet.

Normal prompt: ``[SOS] P·[V; A] <class> . [EOS]``, read at its EOT.
Anchor branch: ``[SOS] A of <class> . [EOS]`` with the unprompted CLIP, never trained.

`AnchorOPTPromptLearner` holds what a Stage II checkpoint stores (V, A, Θ) and builds both
prompts; the CoOp variant uses it as it is, CoCoOp, MaPLe and DePT extend it. `AnchorBranch`
scores the anchor prompt. `Stage2Model` is the contract the shared trainer logic
(``trainers/anchoropt_stage2.py``) relies on; `check_stage2_model` enforces it when a trainer
builds its model, so a new variant that misses a member fails at build time with its name.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, Sequence, runtime_checkable

import torch
from clip.model import CLIP
from torch import nn

from anchoropt.backbone import TextEncoder
from anchoropt.errors import CheckpointError, ConfigError
from anchoropt.method.positions import PositionMatrix, apply_positions
from anchoropt.models.anchor_prompt import anchor_layout, check_anchor_len
from anchoropt.models.clip_parts import normalize, scaled_logits
from anchoropt.prompts.context import init_context
from anchoropt.prompts.layout import PromptLayout

# Context slots (M soft tokens + N anchors, in the order P gives them) before the class name.
NORMAL_TEMPLATE = "{ctx} {class}."


class AnchorOPTPromptLearner(nn.Module):
    """V (``ctx``, trainable), A (``anchor``, a persistent buffer: saved, never trained) and Θ (``positions``).

    The anchor is stored in the checkpoint so that evaluating it on other classes or
    another dataset needs no anchor file; until a Stage I anchor is given (`set_anchor`,
    or a checkpoint is loaded) it holds zeros.

    ``legacy=True`` reproduces the official algorithm: the normal prompt is read ``anchor_len``
    positions before its EOT (its "." for N = 1) and P is sampled at evaluation too (variants add
    their own: MaPLe's deep anchor read, CoCoOp's frozen Θ and meta-net).
    """

    anchor: torch.Tensor

    def __init__(
        self,
        clip_model: CLIP,
        classnames: Sequence[str],
        n_ctx: int,
        anchor_len: int,
        anchor: torch.Tensor | None = None,
        ctx_init: str = "",
        position_mode: str = "learned",
        gumbel_temp: float = 1.0,
        sinkhorn_iters: int = 20,
        legacy: bool = False,
    ) -> None:
        super().__init__()
        anchor_len = check_anchor_len(anchor_len)
        init = init_context(clip_model.token_embedding, n_ctx, ctx_init)
        self.ctx = nn.Parameter(init.vectors)
        width = init.vectors.shape[-1]
        self.register_buffer("anchor", torch.zeros(anchor_len, width, device=init.vectors.device))
        if anchor is not None:
            self.set_anchor(anchor)
        self.n_ctx = init.n_ctx
        self.anchor_len = anchor_len
        self.legacy = bool(legacy)
        if self.legacy and position_mode == "sinkhorn":
            raise ConfigError(
                "TRAINER.ANCHOROPT.LEGACY reproduces the official algorithm, which samples P row-wise "
                "(POSITION_MODE learned); it cannot be combined with TRAINER.ANCHOROPT.POSITION_MODE sinkhorn "
                "(use learned, or switch LEGACY off)"
            )
        self.positions = PositionMatrix(self.n_ctx, anchor_len, position_mode, gumbel_temp, sinkhorn_iters, legacy)
        context_length = clip_model.positional_embedding.shape[0]
        self.layout = PromptLayout(
            clip_model.token_embedding,
            classnames,
            NORMAL_TEMPLATE,
            self.n_ctx + anchor_len,
            context_length=context_length,
        )
        self.anchor_layout = anchor_layout(clip_model, classnames, anchor_len)
        print(f'Initial context: "{init.prefix}" (soft tokens: {self.n_ctx}, anchor tokens: {anchor_len})')
        print(f'Normal prompt: "{self.layout.prompts[0]}" (slots arranged by the {position_mode} position matrix)')
        print(f'Anchor prompt: "{self.anchor_layout.prompts[0]}"')

    # ---- anchor and classes ------------------------------------------------------------
    @torch.no_grad()
    def set_anchor(self, anchor: torch.Tensor) -> None:
        if tuple(anchor.shape) != tuple(self.anchor.shape):
            raise CheckpointError(
                f"anchor of shape {tuple(anchor.shape)} does not fit: expected {tuple(self.anchor.shape)} "
                "(TRAINER.ANCHOROPT.ANCHOR_LEN x CLIP text width)"
            )
        self.anchor.copy_(anchor.to(self.anchor))

    @property
    def classnames(self) -> list[str]:
        return list(self.layout.class_names)

    def set_classnames(self, classnames: Sequence[str]) -> None:
        self.layout.set_class_names(classnames)
        self.anchor_layout.set_class_names(classnames)

    # ---- prompts -----------------------------------------------------------------------
    def arrange(self, ctx: torch.Tensor | None = None, matrix: torch.Tensor | None = None) -> torch.Tensor:
        """Z = P·[V; A] for V = `ctx` ([M, d], or [..., M, d] e.g. CoCoOp's per-image context).

        One P is drawn per call (a fresh Gumbel sample in training) unless `matrix` is given.
        The anchor carries no gradient.
        """
        ctx = self.ctx if ctx is None else ctx
        anchor = self.anchor.detach().to(ctx.dtype).expand(*ctx.shape[:-2], -1, -1)
        stacked = torch.cat([ctx, anchor], dim=-2)
        return apply_positions(self.positions() if matrix is None else matrix, stacked)

    @property
    def readout_index(self) -> torch.Tensor:
        """Where the normal prompt's feature is read: its EOT (LEGACY: EOT - anchor_len, the official offset)."""
        eot = self.layout.eot_index
        return eot - self.anchor_len if self.legacy else eot

    def forward(self, ctx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Normal prompt embeddings [n_cls, L, d] ([..., n_cls, L, d] for batched ctx), read-out positions [n_cls]."""
        return self.layout.assemble(self.arrange(ctx)), self.readout_index

    def anchor_prompts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """ "[A] of <class>." embeddings [n_cls, L_a, d] and EOT positions."""
        return self.anchor_layout.assemble(self.anchor.detach()), self.anchor_layout.eot_index


class AnchorBranch:
    """What every AnchorOPT model shares: the class names live in the prompt learner, and the
    anchor branch is "[A] of <class>." through ``self.text_encoder`` without prompts."""

    prompt_learner: AnchorOPTPromptLearner
    text_encoder: TextEncoder
    logit_scale: torch.Tensor

    @property
    def classnames(self) -> list[str]:
        return self.prompt_learner.classnames

    def set_classnames(self, classnames: Sequence[str]) -> None:
        self.prompt_learner.set_classnames(classnames)

    def anchor_text_features(self) -> torch.Tensor:
        embeds, eot = self.prompt_learner.anchor_prompts()
        return normalize(self.text_encoder(embeds, eot, self.prompt_learner.anchor_layout.length))

    def anchor_logits(self, image_features: torch.Tensor, anchor_text: torch.Tensor | None) -> torch.Tensor | None:
        return None if anchor_text is None else scaled_logits(image_features, anchor_text, self.logit_scale)


@runtime_checkable
class Stage2Model(Protocol):
    """What `trainers.anchoropt_stage2.AnchorOPTStageII` needs from a Stage II model.

    - ``prompt_learner``: the trained (registered, checkpointed) module, an `AnchorOPTPromptLearner`
      or a subclass, whose ``positions`` (`PositionMatrix`) and ``anchor`` buffer the trainer reads;
    - ``classnames`` / ``set_classnames(names)``: the classes scored;
    - ``anchor_text_features()``: "[A] of <class>." features [C, e] (called without grad);
    - ``prompt_state()``: what the normal branch needs that is fixed in eval mode (e.g. the class
      text features), recomputed on every call;
    - ``PROMPTS_FIXED_IN_EVAL``: False when the normal prompts depend on the image (CoCoOp), so
      ``prompt_state()`` cannot be cached per evaluation;
    - ``branch_logits(image, prompt_state=None, anchor_text=None)``: ``(z_n [B, C], z_a [B, C] or None)``.
    """

    PROMPTS_FIXED_IN_EVAL: ClassVar[bool]
    prompt_learner: AnchorOPTPromptLearner

    @property
    def classnames(self) -> list[str]: ...

    def set_classnames(self, classnames: Sequence[str]) -> None: ...

    def anchor_text_features(self) -> torch.Tensor: ...

    def prompt_state(self) -> Any: ...

    def branch_logits(
        self, image: torch.Tensor, prompt_state: Any = None, anchor_text: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...


STAGE2_MEMBERS = (
    "prompt_learner",
    "classnames",
    "set_classnames",
    "anchor_text_features",
    "prompt_state",
    "branch_logits",
    "PROMPTS_FIXED_IN_EVAL",
)


def check_stage2_model(model: Any, trainer_name: str) -> None:
    """Fail at build time, naming what is missing, when `model` does not meet the `Stage2Model` contract."""
    learner = getattr(model, "prompt_learner", None)
    if learner is not None and not isinstance(learner, AnchorOPTPromptLearner):
        raise TypeError(
            f"{trainer_name}: {type(model).__name__}.prompt_learner is a {type(learner).__name__}, "
            "expected an AnchorOPTPromptLearner (it holds V, A and the position matrix)"
        )

    missing = [name for name in STAGE2_MEMBERS if not hasattr(model, name)]
    if missing:
        raise TypeError(
            f"{trainer_name}: the Stage II model {type(model).__name__} lacks {', '.join(missing)} "
            "(see anchoropt.models.stage2_base.Stage2Model)"
        )
