"""CoOp + AnchorOPT model: one set of class prompts P·[V; A] and the anchor branch, one frozen image encoder."""

from __future__ import annotations

import torch
from clip.model import CLIP
from torch import nn

from anchoropt.backbone import TextEncoder
from anchoropt.models.clip_parts import ImageEncoder, normalize, scaled_logits
from anchoropt.models.stage2_base import AnchorBranch, AnchorOPTPromptLearner


class CoOpAnchorOPTCLIP(AnchorBranch, nn.Module):
    """CoOp + AnchorOPT: one set of class prompts, the frozen image encoder shared by both branches."""

    PROMPTS_FIXED_IN_EVAL = True

    def __init__(self, clip_model: CLIP, prompt_learner: AnchorOPTPromptLearner) -> None:
        super().__init__()
        self.prompt_learner = prompt_learner
        self.text_encoder = TextEncoder(clip_model)
        self.image_encoder = ImageEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale

    def prompt_state(self) -> torch.Tensor:
        """Normalised normal-prompt class features [C, e] (draws P once)."""
        embeds, index = self.prompt_learner()
        return normalize(self.text_encoder(embeds, index, self.prompt_learner.layout.length))

    def branch_logits(
        self,
        image: torch.Tensor,
        prompt_state: torch.Tensor | None = None,
        anchor_text: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        image_features = self.image_encoder(image)
        text = self.prompt_state() if prompt_state is None else prompt_state
        normal = scaled_logits(image_features, text, self.logit_scale)
        return normal, self.anchor_logits(image_features, anchor_text)
