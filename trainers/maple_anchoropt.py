"""MaPLe + AnchorOPT (Stage II with deep prompts), registered under the official name ``MaPLe_AnchorOPT``.

Settings: ``TRAINER.ANCHOROPT.*`` (N_CTX, ANCHOR_LEN, POSITION_MODE, loss weights, LEGACY, ...);
prompt depth and precision: ``TRAINER.MAPLE.{PROMPT_DEPTH, PREC}``. The context V starts from
``TRAINER.ANCHOROPT.CTX_INIT`` (random when empty, as in the official code);
``TRAINER.MAPLE.{N_CTX, CTX_INIT}`` are not used. Training, loss, scoring and checkpoints are
the shared Stage II logic (`trainers.anchoropt_stage2`).
"""

from __future__ import annotations

from anchoropt.engine import TRAINER_REGISTRY
from anchoropt.models.maple_anchoropt import MaPLeAnchorOPTCLIP, MaPLeAnchorOPTPromptLearner
from trainers import maple  # noqa: F401  (registers TRAINER.MAPLE)
from trainers.anchoropt_stage2 import AnchorOPTStageII
from trainers.base import ClipTrainer


@TRAINER_REGISTRY.register()
class MaPLe_AnchorOPT(AnchorOPTStageII, ClipTrainer):
    PREC_KEY = "TRAINER.MAPLE.PREC"

    def build_model(self) -> None:
        clip_model = self.load_clip()
        anchor = self.initial_anchor(clip_model.token_embedding.weight.shape[1])
        print("Building MaPLe + AnchorOPT")
        learner = MaPLeAnchorOPTPromptLearner(
            clip_model,
            self.classnames,
            anchor=anchor,
            prompt_depth=self.cfg.TRAINER.MAPLE.PROMPT_DEPTH,
            **self.learner_options(),
        )
        self.setup_anchoropt(MaPLeAnchorOPTCLIP(clip_model, learner))
