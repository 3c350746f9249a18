"""CoCoOp (Zhou et al., CVPR 2022): conditional context, one set of prompts per image."""

from __future__ import annotations

from yacs.config import CfgNode as CN

from anchoropt.config import register_config_node
from anchoropt.engine import TRAINER_REGISTRY
from anchoropt.models.cocoop import CoCoOpCLIP, CoCoOpPromptLearner
from trainers.base import ClipTrainer


@register_config_node
def add_cocoop_config(cfg) -> None:
    cfg.TRAINER.COCOOP = CN()
    cfg.TRAINER.COCOOP.N_CTX = 16  # number of context vectors (ignored when CTX_INIT gives the words)
    cfg.TRAINER.COCOOP.CTX_INIT = ""  # initialisation words, e.g. "a photo of a"
    cfg.TRAINER.COCOOP.PREC = "fp16"  # fp16, fp32, amp


@TRAINER_REGISTRY.register()
class CoCoOp(ClipTrainer):
    """Cross-entropy training (ClipTrainer's step). The prompts depend on the image, so an
    evaluation encodes them for every batch: there are no class features to cache."""

    PREC_KEY = "TRAINER.COCOOP.PREC"
    IMAGE_ENCODER_FROZEN = True

    def build_model(self) -> None:
        cfg = self.cfg.TRAINER.COCOOP
        clip_model = self.load_clip()
        print("Building custom CLIP")
        learner = CoCoOpPromptLearner(clip_model, self.classnames, cfg.N_CTX, cfg.CTX_INIT)
        self.model = CoCoOpCLIP(clip_model, learner).to(self.device)
        self.register_learner(self.model.prompt_learner)
