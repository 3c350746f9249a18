"""CoOp (Zhou et al., IJCV 2022): learnable context vectors for CLIP's text prompt."""

from __future__ import annotations

from yacs.config import CfgNode as CN

from anchoropt.config import register_config_node
from anchoropt.engine import TRAINER_REGISTRY
from anchoropt.models.coop import CoOpPromptLearner, PromptedCLIP
from trainers.base import ClipTrainer, TextFeatureCache


@register_config_node
def add_coop_config(cfg) -> None:
    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16  # number of context vectors
    cfg.TRAINER.COOP.CSC = False  # class-specific context
    cfg.TRAINER.COOP.CTX_INIT = ""  # initialisation words, e.g. "a photo of a"
    cfg.TRAINER.COOP.PREC = "fp16"  # fp16, fp32, amp
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"  # end, middle or front


@TRAINER_REGISTRY.register()
class CoOp(TextFeatureCache, ClipTrainer):
    PREC_KEY = "TRAINER.COOP.PREC"
    IMAGE_ENCODER_FROZEN = True

    def build_model(self) -> None:
        cfg = self.cfg.TRAINER.COOP
        clip_model = self.load_clip()
        print("Building custom CLIP")
        learner = CoOpPromptLearner(
            clip_model, self.classnames, cfg.N_CTX, cfg.CTX_INIT, cfg.CSC, cfg.CLASS_TOKEN_POSITION
        )
        self.model = PromptedCLIP(clip_model, learner).to(self.device)
        self.register_learner(self.model.prompt_learner)
