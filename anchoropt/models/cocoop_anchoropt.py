"""CoCoOp + AnchorOPT: the meta-net bias shifts the soft tokens before the position matrix arranges them.

Normal prompt of image x: ``[SOS] P·[V + π(x); A] <class>. [EOS]``, with one P per step shared
by the batch (a fresh sample in training, the row argmax in evaluation). Θ, V and the meta-net
are trained. The official code trains V only (Θ has ``requires_grad=False`` and the meta-net is
not in its optimizer), and ``LEGACY`` reproduces that: Θ and the meta-net stay at their initial
values. The anchor branch is the unprompted "[A] of <class>." with CLIP's image features, fixed
per class set.

The model follows the contract `anchoropt.models.stage2_base.Stage2Model`; its prompts depend on the
image, so ``PROMPTS_FIXED_IN_EVAL`` is False and ``prompt_state()`` is the position matrix.
"""

from __future__ import annotations

from typing import Sequence

import torch
from clip.model import CLIP

from anchoropt.models.clip_parts import scaled_logits
from anchoropt.models.cocoop import MAX_TEXT_SEQUENCES, ConditionalContext, encode_per_image_prompts
from anchoropt.models.coop_anchoropt import CoOpAnchorOPTCLIP
from anchoropt.models.stage2_base import AnchorOPTPromptLearner


class CoCoOpAnchorOPTPromptLearner(ConditionalContext, AnchorOPTPromptLearner):
    """AnchorOPT's V (``ctx``), A (``anchor``) and Θ (``positions``) plus CoCoOp's ``meta_net``."""

    def __init__(
        self, clip_model: CLIP, classnames: Sequence[str], n_ctx: int, anchor_len: int, **anchoropt_options
    ) -> None:
        super().__init__(clip_model, classnames, n_ctx, anchor_len, **anchoropt_options)
        self.init_meta_net(clip_model)
        if self.legacy:  # the official CoCoOp_AnchorOPT optimises V alone
            self.meta_net.requires_grad_(False)
            if self.positions.logits is not None:
                self.positions.logits.requires_grad_(False)
            print("LEGACY: the position logits and the meta-net are frozen (the official code trains V only)")

    def image_prompts(
        self, image_features: torch.Tensor, matrix: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image normal prompts [B, n_cls, L, d] (one P for the batch) and read-out positions [n_cls]."""
        arranged = self.arrange(self.image_context(image_features), matrix)
        return self.layout.assemble(arranged), self.readout_index


class CoCoOpAnchorOPTCLIP(CoOpAnchorOPTCLIP):
    PROMPTS_FIXED_IN_EVAL = False

    prompt_learner: CoCoOpAnchorOPTPromptLearner

    def __init__(
        self,
        clip_model: CLIP,
        prompt_learner: CoCoOpAnchorOPTPromptLearner,
        max_text_sequences: int = MAX_TEXT_SEQUENCES,
    ) -> None:
        super().__init__(clip_model, prompt_learner)
        self.max_text_sequences = max_text_sequences

    def prompt_state(self) -> torch.Tensor:
        """The position matrix P (a fresh sample in training): the only image-independent part of the prompt."""
        return self.prompt_learner.positions()

    def branch_logits(
        self,
        image: torch.Tensor,
        prompt_state: torch.Tensor | None = None,
        anchor_text: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        image_features = self.image_encoder(image)
        learner = self.prompt_learner
        embeds, readout = learner.image_prompts(image_features, prompt_state)
        text = encode_per_image_prompts(
            self.text_encoder, embeds, readout, learner.layout.length, self.max_text_sequences
        )
        return scaled_logits(image_features, text, self.logit_scale), self.anchor_logits(image_features, anchor_text)
