"""CoCoOp + AnchorOPT (Stage II): P·[V + π(x); A], with Θ, V and the meta-net trained.

Registered under the official name ``CoCoOp_AnchorOPT``. Settings: ``TRAINER.ANCHOROPT.*``
(N_CTX, CTX_INIT, ANCHOR_LEN, POSITION_MODE, loss weights, LEGACY, ...); precision:
``TRAINER.COCOOP.PREC``. ``TRAINER.COCOOP.{N_CTX, CTX_INIT}`` are not used. Training, loss,
scoring and checkpoints are the shared Stage II logic (`trainers.anchoropt_stage2`).
"""

from __future__ import annotations

from anchoropt.engine import TRAINER_REGISTRY
from anchoropt.models.cocoop_anchoropt import CoCoOpAnchorOPTCLIP, CoCoOpAnchorOPTPromptLearner
from trainers import cocoop  # noqa: F401  (registers TRAINER.COCOOP)
from trainers.anchoropt_stage2 import AnchorOPTStageII
from trainers.base import ClipTrainer


@TRAINER_REGISTRY.register()
class CoCoOp_AnchorOPT(AnchorOPTStageII, ClipTrainer):
    PREC_KEY = "TRAINER.COCOOP.PREC"
    IMAGE_ENCODER_FROZEN = True

    def build_model(self) -> None:
        clip_model = self.load_clip()
        anchor = self.initial_anchor(clip_model.token_embedding.weight.shape[1])
        print("Building CoCoOp + AnchorOPT")
        learner = CoCoOpAnchorOPTPromptLearner(clip_model, self.classnames, anchor=anchor, **self.learner_options())
        self.setup_anchoropt(CoCoOpAnchorOPTCLIP(clip_model, learner))
