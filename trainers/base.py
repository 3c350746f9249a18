"""``ClipTrainer``: what every CLIP trainer here shares, written once.

Loading CLIP (``MODEL.BACKBONE.NAME`` / ``PATH``) with the trainer's ``PREC``,
precision-aware optimisation steps (autocast, GradScaler, non-finite loss
check), the LR stepped after the last batch of each epoch (as CoOp does),
evaluation with a per-evaluation cache hook, and a results file per
evaluation. Subclasses implement the Dassl contract: ``build_model``,
``forward_backward`` and ``model_inference``.
"""

from __future__ import annotations

import os.path as osp
import time
from typing import Any

import torch
import torch.nn.functional as F
from clip.model import CLIP

from anchoropt.backbone import Precision, check_input_size, load_clip
from anchoropt.backbone.loading import loaded_backbone_identity
from anchoropt.backbone.precision import non_finite_loss_advice
from anchoropt.engine import TrainerX, build_lr_scheduler, build_optimizer, engine_description, write_json
from anchoropt.results.record import build_record, results_file_name
from trainers.frozen_features import FrozenImageFeatures


def cfg_get(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


class ClipTrainer(FrozenImageFeatures, TrainerX):
    """Base class of the CLIP prompt-learning trainers (both engines).

    A trainer whose image encoder is frozen sets ``IMAGE_ENCODER_FROZEN = True``: its evaluations then
    read test features from the on-disk cache (see `trainers.frozen_features`).
    """

    #: Config key holding this trainer's precision (fp32 / fp16 / amp); "" means fp32.
    PREC_KEY = ""

    def __init__(self, cfg: Any) -> None:
        self._created_at = time.time()
        self.precision: Precision | None = None
        super().__init__(cfg)

    # ---- data -----------------------------------------------------------------------------
    @property
    def classnames(self) -> list[str]:
        return list(self.dm.dataset.classnames)

    def parse_batch_train(self, batch: dict):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    # ---- model ----------------------------------------------------------------------------
    @property
    def prec(self) -> str:
        return cfg_get(self.cfg, self.PREC_KEY) if self.PREC_KEY else "fp32"

    def load_clip(self) -> CLIP:
        """The frozen CLIP for this run, on the trainer's device, in the trainer's precision."""
        cfg = self.cfg
        source = cfg.MODEL.BACKBONE.PATH or cfg.MODEL.BACKBONE.NAME
        print(f"Loading CLIP (backbone: {source})")
        clip_model = load_clip(cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.PATH)
        self.backbone_identity = loaded_backbone_identity(clip_model)
        check_input_size(clip_model, cfg.INPUT.SIZE)
        self.precision = Precision(self.prec, self.device)
        self.precision.apply(clip_model)
        return clip_model.to(self.device)

    def autocast(self):
        return self.precision.autocast()

    def register_learner(self, module: torch.nn.Module, name: str = "prompt_learner") -> None:
        """Optimise ``module`` with ``OPTIM.*`` and register it: its state dict is what checkpoints hold."""
        self.optim = build_optimizer(module, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model(name, module, self.optim, self.sched)

    # ---- optimisation ---------------------------------------------------------------------
    def optimize(self, loss: torch.Tensor, names=None) -> None:
        """zero_grad, backward (scaled under fp16 amp), step; a non-finite loss stops the run."""
        self.detect_anomaly(loss)
        self.model_zero_grad(names)
        scaler = self.precision.scaler if self.precision else None
        if scaler is None:
            loss.backward()
            self.model_update(names)
            return
        scaler.scale(loss).backward()
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                scaler.step(self._optims[name])
        scaler.update()

    def non_finite_loss_advice(self) -> str:
        prec = self.precision.prec if self.precision else self.prec  # the precision in effect (fp16 is CUDA only)
        return non_finite_loss_advice(self.PREC_KEY or "PREC", prec)

    def step_lr_if_epoch_done(self) -> None:
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()

    def forward_backward(self, batch: dict) -> dict:
        """Cross-entropy on ``self.model(image)`` (CoOp, MaPLe, ...); trainers with other losses override it."""
        image, label = self.parse_batch_train(batch)
        with self.autocast():
            output = self.model(image)
            loss = F.cross_entropy(output.float(), label)
        self.optimize(loss)
        self.step_lr_if_epoch_done()
        return {"loss": loss.item(), "acc": (output.argmax(1) == label).float().mean().item() * 100}

    # ---- evaluation -----------------------------------------------------------------------
    def before_evaluation(self) -> None:
        """Called once per evaluation, in eval mode and under no_grad: cache what is fixed."""

    def after_evaluation(self) -> None:
        """Called after an evaluation: drop what ``before_evaluation`` cached."""

    def results_extras(self) -> dict:
        """Trainer-specific facts added to the results file."""
        return {}

    def backbone_record(self) -> dict:
        """``backbone``: what was loaded (``ViT-B/16`` also for OpenAI's file loaded by path), and its details."""
        identity = getattr(self, "backbone_identity", None)
        return {"backbone": identity["label"], "backbone_identity": identity} if identity else {}

    def parse_batch_test(self, batch: dict):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    @torch.no_grad()
    def test(self, split: str | None = None) -> float:
        self.set_model_mode("eval")
        self.evaluator.reset()
        split = split or self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            loader = self.val_loader
        else:
            split, loader = "test", self.test_loader
        print(f"Evaluate on the *{split}* set")
        batches = self.evaluation_batches(split, loader)  # the loader, or its images' cached features
        with self.autocast():  # cached features get the precision the batches would have computed them in
            self.before_evaluation()
        try:
            for batch in batches:
                image, label = self.parse_batch_test(batch)
                with self.autocast():
                    output = self.model_inference(image)
                self.evaluator.process(output.float(), label)
        finally:
            self.after_evaluation()
        results = self.evaluator.evaluate()
        self.write_results(split, results, num_samples=len(loader.dataset))
        return list(results.values())[0]

    def write_results(self, split: str, metrics: dict, num_samples: int) -> str:
        record = build_record(
            self.cfg,
            split,
            metrics,
            engine=engine_description(),
            num_classes=self.num_classes,
            num_samples=num_samples,
            wall_time_s=self.total_wall_time_s(),  # across resumes
            extra={"shots": getattr(self, "shots", None), **self.backbone_record(), **self.results_extras()},
        )
        path = osp.join(self.cfg.OUTPUT_DIR, results_file_name(split))
        write_json(record, path)
        print(f"Results written to {path}")
        return path


class TextFeatureCache:
    """Mixin: encode the class prompts once per evaluation (they are fixed in eval mode)."""

    _eval_text_features = None

    def before_evaluation(self) -> None:
        self._eval_text_features = self.model.text_features()

    def after_evaluation(self) -> None:
        self._eval_text_features = None

    def model_inference(self, image):
        return self.model(image, self._eval_text_features)
