"""CoOp + AnchorOPT (Stage II): soft tokens and the frozen Stage I anchor, arranged by a learned position matrix.

Registered under the official name ``CoOp_AnchorOPT``. Settings: ``TRAINER.ANCHOROPT.*``;
precision: ``TRAINER.COOP.PREC``. The Stage I anchor comes from ``TRAINER.ANCHOROPT.ANCHOR_PATH``
and is stored in this trainer's checkpoints.
"""

from __future__ import annotations

from anchoropt.engine import TRAINER_REGISTRY
from anchoropt.errors import ConfigError
from anchoropt.models.coop_anchoropt import CoOpAnchorOPTCLIP
from anchoropt.models.stage2_base import AnchorOPTPromptLearner
from trainers.anchoropt_stage2 import AnchorOPTStageII
from trainers.base import ClipTrainer


@TRAINER_REGISTRY.register()
class CoOp_AnchorOPT(AnchorOPTStageII, ClipTrainer):
    PREC_KEY = "TRAINER.COOP.PREC"
    IMAGE_ENCODER_FROZEN = True

    def build_model(self) -> None:
        coop = self.cfg.TRAINER.COOP
        if coop.CSC:
            raise ConfigError(
                "TRAINER.COOP.CSC True is not supported by CoOp_AnchorOPT (one context shared by all classes)"
            )
        if coop.CLASS_TOKEN_POSITION != "end":
            raise ConfigError(
                f"TRAINER.COOP.CLASS_TOKEN_POSITION={coop.CLASS_TOKEN_POSITION!r} is not supported by "
                "CoOp_AnchorOPT: the class name follows the arranged context ('end')"
            )
        clip_model = self.load_clip()
        anchor = self.initial_anchor(clip_model.token_embedding.weight.shape[1])
        print("Building CoOp + AnchorOPT")
        learner = AnchorOPTPromptLearner(clip_model, self.classnames, anchor=anchor, **self.learner_options())
        self.setup_anchoropt(CoOpAnchorOPTCLIP(clip_model, learner))
