"""DePT (Zhang et al., CVPR 2024) on CoOp's prompts: FiLM + a classification head beside CLIP's similarity.

Settings: the prompt is CoOp's (``TRAINER.COOP.{N_CTX, CTX_INIT, CSC, CLASS_TOKEN_POSITION,
PREC}``); the head is ``TRAINER.LINEAR_PROBE.{TYPE, WEIGHT, TEST_TIME_FUSION}`` and
``TRAINER.FILM.LINEAR_PROBE`` (the official key names). The prompt, the head and both FiLM
transforms form the one registered module, so all of them are saved and reloaded.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from yacs.config import CfgNode as CN

from anchoropt.config import register_config_node
from anchoropt.engine import TRAINER_REGISTRY
from anchoropt.method.losses import dept_loss
from anchoropt.models.dept import DePTCLIP, DePTPromptLearner, DePTSettings, fuse_logits, head_columns
from trainers import coop  # noqa: F401  (registers TRAINER.COOP)
from trainers.base import ClipTrainer

EXTRAS_KEY = "dept"


@register_config_node
def add_dept_config(cfg) -> None:
    cfg.TRAINER.LINEAR_PROBE = CN()
    cfg.TRAINER.LINEAR_PROBE.TYPE = "linear"  # linear (classifier over the trained classes) or similarity
    cfg.TRAINER.LINEAR_PROBE.WEIGHT = 0.7  # w: loss = (1-w) CE(sim) + w CE(head); test: (1-w) sim + w head
    cfg.TRAINER.LINEAR_PROBE.TEST_TIME_FUSION = True  # False: trained classes score with the head alone
    cfg.TRAINER.FILM = CN()
    cfg.TRAINER.FILM.LINEAR_PROBE = True  # channel-wise transforms of the head's image and text features


class DePTHeadTrainer:
    """Mixin for trainers whose registered ``prompt_learner`` carries a DePT ``head``."""

    LEARNER_NAME = "prompt_learner"

    cfg: Any
    model: Any

    @functools.cached_property
    def dept(self) -> DePTSettings:
        return DePTSettings.from_cfg(self.cfg)

    def before_checkpoint_load(self, name: str, checkpoint: dict) -> None:
        super().before_checkpoint_load(name, checkpoint)
        if name == self.LEARNER_NAME:
            # The head has one row per trained class; the model may have been built for other classes.
            self.model.prompt_learner.head.match_checkpoint(checkpoint["state_dict"], prefix="head.")

    def head_summary(self, columns: torch.Tensor | None) -> dict[str, Any]:
        """DePT settings and how many classes the head scores (for results files)."""
        with_head = int((columns >= 0).sum()) if columns is not None else 0
        total = int(columns.numel()) if columns is not None else 0
        return {
            "head_type": self.dept.head_type,
            "weight": self.dept.weight,
            "test_time_fusion": self.dept.test_time_fusion,
            "film": self.dept.film,
            "head_classes": with_head,
            "similarity_only_classes": total - with_head,
        }


@TRAINER_REGISTRY.register()
class DePT(DePTHeadTrainer, ClipTrainer):
    PREC_KEY = "TRAINER.COOP.PREC"
    IMAGE_ENCODER_FROZEN = True

    trained_classnames: list[str] | None = None
    _eval: dict | None = None
    _last_columns: torch.Tensor | None = None

    def build_model(self) -> None:
        coop_cfg = self.cfg.TRAINER.COOP
        clip_model = self.load_clip()
        print("Building DePT (CoOp prompts, FiLM and classification head)")
        learner = DePTPromptLearner(
            clip_model,
            self.classnames,
            coop_cfg.N_CTX,
            coop_cfg.CTX_INIT,
            coop_cfg.CSC,
            coop_cfg.CLASS_TOKEN_POSITION,
            **self.dept.head_options(),
        )
        self.model = DePTCLIP(clip_model, learner).to(self.device)
        self.register_learner(self.model.prompt_learner, self.LEARNER_NAME)

    def before_train(self) -> None:
        self.trained_classnames = list(self.classnames)
        super().before_train()

    def forward_backward(self, batch: dict) -> dict:
        image, label = self.parse_batch_train(batch)
        with self.autocast():
            out = self.model.dept_outputs(image, labels=label)
            loss, parts = dept_loss(out.sim, label, out.head, out.head_labels, self.dept.weight)
        self.optimize(loss)
        self.step_lr_if_epoch_done()
        return {
            "loss": loss.item(),
            **{k: float(v) for k, v in parts.items()},
            "acc": (out.sim.argmax(1) == label).float().mean().item() * 100,
        }

    # ---- evaluation: text features once; head on trained classes, similarity on the others ----
    def before_evaluation(self) -> None:
        if self.trained_classnames is None:
            print("Trained classes unknown: every class is scored by similarity alone")
        columns = head_columns(self.classnames, self.trained_classnames)
        self._last_columns = columns
        self._eval = {
            "text": self.model.raw_text_features(),
            "columns": columns.to(self.device) if bool((columns >= 0).any()) else None,
        }

    def after_evaluation(self) -> None:
        self._eval = None

    def model_inference(self, image: torch.Tensor) -> torch.Tensor:
        columns = self._eval["columns"]
        out = self.model.dept_outputs(image, self._eval["text"], columns=columns)
        return out.sim if columns is None else fuse_logits(out.sim, out.head, columns, self.dept)

    def results_extras(self) -> dict:
        return {
            EXTRAS_KEY: self.head_summary(self._last_columns),
            "trained_classes": len(self.trained_classnames or []),
        }

    # ---- checkpoints: the head's rows belong to the trained class names ----
    def checkpoint_extras(self, name: str) -> dict:
        if name != self.LEARNER_NAME:
            return {}
        return {EXTRAS_KEY: {"trained_classnames": list(self.trained_classnames or [])}}

    def on_checkpoint_loaded(self, name: str, checkpoint: dict) -> None:
        if name != self.LEARNER_NAME:
            return
        trained = (checkpoint.get(EXTRAS_KEY) or {}).get("trained_classnames")
        if trained is None:
            print("Warning: the checkpoint does not list the classes it was trained on; the head is not used")
        self.trained_classnames = list(trained) if trained is not None else None
