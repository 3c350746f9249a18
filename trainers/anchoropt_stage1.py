"""AnchorOPT Stage I: learn the anchor tokens A from class descriptions.

Registered as ``AnchorOPT_StageI`` and under the official name ``CoOp_Pretrain_Anchor``.
Loss: ``ANCHOR_MSE_WEIGHT`` · MSE(normalised "[A] of <class>." features, normalised description
features) over the training classes, plus the optional ``ANCHOR_CE_WEIGHT`` · CE of the anchor
prompt's logits on training images. With a CE weight of 0 no image is loaded or encoded, yet the
run takes one optimizer step per training batch with the usual LR schedule, exactly as a run over
the loader would. The result is written to ``OUTPUT_DIR/anchor.pth`` (Stage II's ANCHOR_PATH).

Evaluation (``--eval-only --model-dir``) is anchor-only zero-shot classification with
"[A] of <class>."; the model directory may be a Stage I output directory or a released anchor.
"""

from __future__ import annotations

import os.path as osp
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from anchoropt.engine import TRAINER_REGISTRY
from anchoropt.engine.checkpoint import BEST_NAME
from anchoropt.errors import ConfigError
from anchoropt.method.anchor_checkpoint import ANCHOR_FILE_NAME, load_anchor, save_anchor
from anchoropt.method.anchor_tokens import format_nearest_tokens, nearest_tokens_record, nearest_vocabulary_tokens
from anchoropt.method.descriptions import default_descriptions_path, encode_descriptions, load_descriptions
from anchoropt.method.losses import description_mse
from anchoropt.models.anchor_prompt import AnchorPromptLearner
from anchoropt.models.coop import PromptedCLIP
from anchoropt.runs.identity import run_identity
from anchoropt.runs.provenance import PROVENANCE_KEY, anchor_provenance
from trainers.base import ClipTrainer, TextFeatureCache

NEAREST_TOKENS = 5


@dataclass(frozen=True)
class StageISettings:
    anchor_len: int
    mse_weight: float
    ce_weight: float
    max_per_class: int
    descriptions: str

    @classmethod
    def from_cfg(cls, cfg: Any) -> "StageISettings":
        c = cfg.TRAINER.ANCHOROPT
        settings = cls(
            int(c.ANCHOR_LEN),
            float(c.ANCHOR_MSE_WEIGHT),
            float(c.ANCHOR_CE_WEIGHT),
            int(c.MAX_TEMPLATE_LENGTH),
            str(c.DESCRIPTIONS),
        )
        for key, value in (("ANCHOR_MSE_WEIGHT", settings.mse_weight), ("ANCHOR_CE_WEIGHT", settings.ce_weight)):
            if value < 0:
                raise ConfigError(f"TRAINER.ANCHOROPT.{key} must be >= 0, got {value}")
        if settings.mse_weight == 0 and settings.ce_weight == 0:
            raise ConfigError(
                "TRAINER.ANCHOROPT.ANCHOR_MSE_WEIGHT and ANCHOR_CE_WEIGHT are both 0: there is nothing to train"
            )
        return settings

    @property
    def uses_images(self) -> bool:
        return self.ce_weight > 0


@TRAINER_REGISTRY.register()
class AnchorOPT_StageI(TextFeatureCache, ClipTrainer):
    PREC_KEY = "TRAINER.COOP.PREC"
    IMAGE_ENCODER_FROZEN = True
    MODEL_NAME = "anchor_prompt_learner"  # the released anchors' folder name

    trained_classnames: list[str] | None = None
    anchor_origin: str | None = None
    descriptions_read: str | None = None

    def build_model(self) -> None:
        self.stage1 = StageISettings.from_cfg(self.cfg)
        clip_model = self.load_clip()
        print("Building the anchor prompt learner (Stage I)")
        learner = AnchorPromptLearner(clip_model, self.classnames, self.stage1.anchor_len)
        self.model = PromptedCLIP(clip_model, learner).to(self.device)
        self.register_learner(learner, self.MODEL_NAME)
        self.description_features = None  # encoded when training starts (evaluation does not need them)

    def uses_training_images(self) -> bool:
        return self.stage1.uses_images

    @property
    def anchor(self) -> torch.Tensor:
        return self.model.prompt_learner.anchor

    # ---- descriptions -------------------------------------------------------------------
    def descriptions_path(self) -> str:
        return self.stage1.descriptions or str(default_descriptions_path(self.cfg.DATASET.NAME))

    def encode_class_descriptions(self) -> None:
        path = self.descriptions_path()
        self.descriptions_read = path  # its sha256 goes into the anchor's provenance
        descriptions = load_descriptions(path, self.classnames, self.stage1.max_per_class)
        start = time.time()
        with self.autocast():
            self.description_features = encode_descriptions(self.model.text_encoder, descriptions)
        print(
            f"Encoded {self.description_features.features.shape[0]} descriptions of {len(descriptions)} classes "
            f"from {path} ({time.time() - start:.1f}s, once)"
        )

    # ---- training -----------------------------------------------------------------------
    def before_train(self) -> None:
        self.trained_classnames = list(self.classnames)
        self.anchor_origin = "trained"
        if self.stage1.mse_weight > 0:
            self.encode_class_descriptions()
        if not self.stage1.uses_images:
            print(
                "ANCHOR_CE_WEIGHT is 0: training images are neither loaded nor encoded "
                f"({len(self.train_loader_x)} optimizer steps per epoch, as over the training loader)"
            )
        super().before_train()

    @property
    def reads_training_images(self) -> bool:
        return self.stage1.uses_images

    def epoch_batches(self):
        if self.stage1.uses_images:
            return super().epoch_batches()
        # Same steps and LR schedule as an epoch over the loader, without touching it.
        return [None] * len(self.train_loader_x)

    def forward_backward(self, batch: dict | None) -> dict:
        """One step; `batch` is None when the loss needs no images (ANCHOR_CE_WEIGHT 0)."""
        summary = {}
        with self.autocast():
            text_features = self.model.text_features()
            loss = text_features.new_zeros(())
            if self.stage1.mse_weight > 0:
                mse = description_mse(text_features, self.description_features)
                loss = loss + self.stage1.mse_weight * mse
                summary["mse"] = mse.item()
            if batch is not None:
                image, label = self.parse_batch_train(batch)
                logits = self.model(image, text_features)
                ce = F.cross_entropy(logits.float(), label)
                loss = loss + self.stage1.ce_weight * ce
                summary["ce"] = ce.item()
                summary["acc"] = (logits.argmax(1) == label).float().mean().item() * 100
        self.optimize(loss)
        self.step_lr_if_epoch_done()
        return {"loss": loss.item(), **summary}

    def after_train(self) -> None:
        deploys_best = not self.cfg.TEST.NO_TEST and self.cfg.TEST.FINAL_MODEL == "best_val"
        if not deploys_best:
            self.export_anchor()
        super().after_train()
        if deploys_best:
            self.export_anchor()

    def anchor_settings(self) -> dict:
        cfg = self.cfg
        return {
            "anchor_len": self.stage1.anchor_len,
            "mse_weight": self.stage1.mse_weight,
            "ce_weight": self.stage1.ce_weight,
            "max_template_length": self.stage1.max_per_class,
            "descriptions": self.descriptions_path(),
            "dataset": cfg.DATASET.NAME,
            "subsample_classes": cfg.DATASET.SUBSAMPLE_CLASSES,
            "seed": cfg.SEED,
            "backbone": cfg.MODEL.BACKBONE.NAME,
            "max_epoch": cfg.OPTIM.MAX_EPOCH,
            "trainer": cfg.TRAINER.NAME,
            # What reusing this anchor is checked against (anchoropt.runs.provenance).
            PROVENANCE_KEY: anchor_provenance(run_identity(cfg)["fingerprint"], self.descriptions_read),
        }

    def export_anchor(self) -> str:
        path = save_anchor(
            osp.join(self.output_dir, ANCHOR_FILE_NAME),
            self.anchor,
            self.trained_classnames or [],
            self.anchor_settings(),
        )
        print(f"Anchor written to {path} (Stage II: TRAINER.ANCHOROPT.ANCHOR_PATH {path})")
        self.print_nearest_tokens()
        return str(path)

    # ---- interpretability ---------------------------------------------------------------
    def nearest_tokens(self, top_k: int = NEAREST_TOKENS):
        return nearest_vocabulary_tokens(self.anchor, self.model.text_encoder.token_embedding.weight, top_k)

    def print_nearest_tokens(self) -> None:
        print("Nearest vocabulary tokens of the anchor (cosine similarity, distance):")
        print(format_nearest_tokens(self.nearest_tokens(), self.anchor))

    # ---- loading and evaluation ---------------------------------------------------------
    def load_model(self, directory: str, epoch: int | None = None) -> None:
        """A Dassl checkpoint when an epoch is given or a best model exists; otherwise the anchor
        via `load_anchor` (``anchor.pth`` of a Stage I run, a released anchor folder or file)."""
        best = osp.join(directory, self.MODEL_NAME, BEST_NAME) if directory else ""
        if not directory or epoch is not None or osp.isfile(best):
            super().load_model(directory, epoch)
            return
        record = load_anchor(directory, expected_width=self.anchor.shape[1], expected_len=self.stage1.anchor_len)
        self.model.prompt_learner.set_anchor(record.anchor)
        self.trained_classnames = list(record.classnames) or None
        self.anchor_origin = str(record.path)
        print(f"Anchor loaded from {record.path} ({record.source_format} format)")
        self.print_nearest_tokens()

    def checkpoint_extras(self, name: str) -> dict:
        return {
            "anchoropt": {
                "trained_classnames": list(self.trained_classnames or []),
                "anchor_len": self.stage1.anchor_len,
            }
        }

    def on_checkpoint_loaded(self, name: str, checkpoint: dict) -> None:
        trained = (checkpoint.get("anchoropt") or {}).get("trained_classnames")
        self.trained_classnames = list(trained) if trained else None
        if self.anchor_origin != "trained":
            self.anchor_origin = "checkpoint"

    def results_extras(self) -> dict:
        return {
            "scoring": {
                "mode": "anchor",
                "rule": "anchor",
                "num_classes": len(self.classnames),
                "anchor_classes": len(self.classnames),
            },
            "anchor": {
                "source": self.anchor_origin,
                "anchor_len": self.stage1.anchor_len,
                "trained_classes": len(self.trained_classnames or []),
                "nearest_tokens": nearest_tokens_record(self.nearest_tokens()),
            },
        }


@TRAINER_REGISTRY.register()
class CoOp_Pretrain_Anchor(AnchorOPT_StageI):
    """The official name of the Stage I trainer, so existing scripts carry over."""
