"""MaPLe (Khattak et al., CVPR 2023): multi-modal deep prompt learning for CLIP."""

from __future__ import annotations

from yacs.config import CfgNode as CN

from anchoropt.config import register_config_node
from anchoropt.engine import TRAINER_REGISTRY
from anchoropt.models.maple import MaPLeCLIP, MaPLePromptLearner
from trainers.base import ClipTrainer, TextFeatureCache


@register_config_node
def add_maple_config(cfg) -> None:
    cfg.TRAINER.MAPLE = CN()
    cfg.TRAINER.MAPLE.N_CTX = 2  # context tokens (learned from the first N_CTX words of CTX_INIT)
    cfg.TRAINER.MAPLE.CTX_INIT = "a photo of a"  # initialisation words; the words past N_CTX stay fixed text
    cfg.TRAINER.MAPLE.PREC = "fp16"  # fp16, bf16, fp32, amp
    cfg.TRAINER.MAPLE.PROMPT_DEPTH = 9  # layers with prompts (1 = input layer only); max = transformer layers


@TRAINER_REGISTRY.register()
class MaPLe(TextFeatureCache, ClipTrainer):
    """Only the prompt learner is registered, so checkpoints hold only the learned prompts and projections."""

    PREC_KEY = "TRAINER.MAPLE.PREC"

    def build_model(self) -> None:
        cfg = self.cfg.TRAINER.MAPLE
        clip_model = self.load_clip()
        print("Building custom CLIP")
        learner = MaPLePromptLearner(clip_model, self.classnames, cfg.N_CTX, cfg.CTX_INIT, cfg.PROMPT_DEPTH)
        self.model = MaPLeCLIP(clip_model, learner).to(self.device)
        self.register_learner(self.model.prompt_learner)
