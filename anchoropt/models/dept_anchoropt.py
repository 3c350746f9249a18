"""DePT + AnchorOPT: AnchorOPT's arranged prompt ``P·[V; A]`` with DePT's FiLM and classification head.

The normal branch's similarity logits and the head follow `anchoropt.models.dept`; the anchor
branch is the unprompted "[A] of <class>." with CLIP's image features. The model follows the
contract `anchoropt.models.stage2_base.Stage2Model` (``branch_logits`` gives the similarity logits of the
normal branch) and adds DePT's outputs (`DePTScoring.dept_outputs`) for the trainer's loss and
per-class scoring.
"""

from __future__ import annotations

from typing import Sequence

import torch
from clip.model import CLIP

from anchoropt.models.coop_anchoropt import CoOpAnchorOPTCLIP
from anchoropt.models.dept import DePTHead, DePTScoring
from anchoropt.models.stage2_base import AnchorOPTPromptLearner


class DePTAnchorOPTPromptLearner(AnchorOPTPromptLearner):
    """AnchorOPT's V (``ctx``), A (``anchor``) and Θ (``positions``) plus the DePT ``head``."""

    def __init__(
        self,
        clip_model: CLIP,
        classnames: Sequence[str],
        n_ctx: int,
        anchor_len: int,
        head_type: str = "linear",
        film: bool = True,
        **anchoropt_options,
    ) -> None:
        super().__init__(clip_model, classnames, n_ctx, anchor_len, **anchoropt_options)
        embed_dim = int(clip_model.text_projection.shape[1])
        self.head = DePTHead(embed_dim, len(classnames), head_type, film).to(self.ctx.device)
        print(f"DePT head: {head_type} over {len(classnames)} classes, FiLM {'on' if film else 'off'}")


class DePTAnchorOPTCLIP(DePTScoring, CoOpAnchorOPTCLIP):
    """``prompt_state()`` is the unnormalised normal-prompt class features (fixed in evaluation)."""

    PROMPTS_FIXED_IN_EVAL = True

    def raw_text_features(self) -> torch.Tensor:
        embeds, index = self.prompt_learner()
        return self.text_encoder(embeds, index, self.prompt_learner.layout.length).float()

    def prompt_state(self) -> torch.Tensor:
        return self.raw_text_features()

    def branch_logits(
        self,
        image: torch.Tensor,
        prompt_state: torch.Tensor | None = None,
        anchor_text: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.dept_outputs(image, prompt_state)
        return out.sim, self.anchor_logits(out.image_features, anchor_text)
