"""DePT + AnchorOPT (Stage II): AnchorOPT's arranged prompt with DePT's FiLM and head.

Registered under the official name ``DePT_AnchorOPT``. Settings: ``TRAINER.ANCHOROPT.*`` (prompt,
positions, PROMPT_CE_WEIGHT, LEGACY, ...), ``TRAINER.LINEAR_PROBE.*`` / ``TRAINER.FILM.*`` (head);
precision: ``TRAINER.COOP.PREC``.

Loss: ``λ₁·[(1 − w)·CE(z_n) + w·CE(head)]`` (+ ``λ₂``·KD as in the other variants when
``KD_WEIGHT`` > 0; the published DePT + AnchorOPT has none, its configs set 0). Scoring: where the
learned prompt scores (every class of a trained class set; trained classes under ``per_class``)
it is DePT's fusion ``(1 − w)·z_n + w·head``; the ensemble is ``(z_n + z_a)/2`` with the plain
similarity logits, as in the official code.
"""

from __future__ import annotations

from typing import Any

import torch

from anchoropt.engine import TRAINER_REGISTRY
from anchoropt.method.losses import anchoropt_loss, dept_loss
from anchoropt.models.dept import fuse_logits, head_columns
from anchoropt.models.dept_anchoropt import DePTAnchorOPTCLIP, DePTAnchorOPTPromptLearner
from trainers.anchoropt_stage2 import AnchorOPTStageII
from trainers.base import ClipTrainer
from trainers.dept import EXTRAS_KEY, DePTHeadTrainer


@TRAINER_REGISTRY.register()
class DePT_AnchorOPT(DePTHeadTrainer, AnchorOPTStageII, ClipTrainer):
    PREC_KEY = "TRAINER.COOP.PREC"
    IMAGE_ENCODER_FROZEN = True

    _head_columns: torch.Tensor | None = None
    _last_columns: torch.Tensor | None = None

    def build_model(self) -> None:
        clip_model = self.load_clip()
        anchor = self.initial_anchor(clip_model.token_embedding.weight.shape[1])
        print("Building DePT + AnchorOPT")
        learner = DePTAnchorOPTPromptLearner(
            clip_model, self.classnames, anchor=anchor, **self.dept.head_options(), **self.learner_options()
        )
        self.setup_anchoropt(DePTAnchorOPTCLIP(clip_model, learner))
        if self.stage2.kd_weight > 0:
            print(
                f"Note: distillation is on (TRAINER.ANCHOROPT.KD_WEIGHT={self.stage2.kd_weight}); the published "
                "DePT + AnchorOPT has no distillation term (KD_WEIGHT 0)"
            )

    # ---- training ----
    def stage2_outputs(self, image: torch.Tensor, label: torch.Tensor, anchor_text: torch.Tensor | None):
        out = self.model.dept_outputs(image, labels=label)
        anchor = self.model.anchor_logits(out.image_features, anchor_text)
        return out.sim, anchor, {"head_logits": out.head, "head_labels": out.head_labels}

    def stage2_loss(
        self,
        normal: torch.Tensor,
        anchor: torch.Tensor | None,
        label: torch.Tensor,
        head_logits: torch.Tensor | None = None,
        head_labels: torch.Tensor | None = None,
    ):
        """λ₁·DePT loss + λ₂·KD (the shared distillation term; 0 when KD_WEIGHT is 0)."""
        if head_logits is None or head_labels is None:
            raise ValueError("DePT_AnchorOPT's loss needs the head logits and labels (see stage2_outputs)")
        s = self.stage2
        task, parts = dept_loss(normal, label, head_logits, head_labels, self.dept.weight)
        distill, kd_parts = anchoropt_loss(normal, anchor, label, 0.0, s.kd_weight, s.kd_temperature)
        return s.ce_weight * task + distill, {**parts, "kd": kd_parts["kd"]}

    # ---- evaluation: DePT's fusion on trained classes, the anchor ensemble on the others ----
    def before_evaluation(self) -> None:
        super().before_evaluation()
        columns = head_columns(self.model.classnames, self.trained_classnames)
        if self._last_scoring["rule"] not in ("normal", "per_class"):
            columns = torch.full_like(columns, -1)  # the ensemble for every class: no head fusion
        self._head_columns = columns.to(self.device) if bool((columns >= 0).any()) else None
        self._last_columns = columns

    def scored_branches(self, image: torch.Tensor, prompt_state: Any, anchor_text: torch.Tensor | None):
        columns = self._head_columns
        out = self.model.dept_outputs(image, prompt_state, columns=columns)
        normal = out.sim if columns is None else fuse_logits(out.sim, out.head, columns, self.dept)
        return normal, self.model.anchor_logits(out.image_features, anchor_text)

    def after_evaluation(self) -> None:
        super().after_evaluation()
        self._head_columns = None

    def results_extras(self) -> dict:
        return {**super().results_extras(), EXTRAS_KEY: self.head_summary(self._last_columns)}
