"""Stage II logic shared by every AnchorOPT trainer (CoOp, MaPLe, CoCoOp and DePT + AnchorOPT).

A trainer mixes `AnchorOPTStageII` in front of `ClipTrainer`, builds a model that follows the
contract `anchoropt.models.stage2_base.Stage2Model` (``prompt_learner`` holding V, A and Θ;
``anchor_text_features()``, ``prompt_state()``, ``branch_logits()``, ``set_classnames()``,
``PROMPTS_FIXED_IN_EVAL``) and hands it to `setup_anchoropt`, which checks the contract::

    @TRAINER_REGISTRY.register()
    class MaPLe_AnchorOPT(AnchorOPTStageII, ClipTrainer):
        PREC_KEY = "TRAINER.MAPLE.PREC"

        def build_model(self):
            clip_model = self.load_clip()
            anchor = self.initial_anchor(clip_model.token_embedding.weight.shape[1])
            learner = MaPLeAnchorOPTPromptLearner(clip_model, self.classnames, anchor=anchor, **self.learner_options())
            self.setup_anchoropt(MaPLeAnchorOPTCLIP(clip_model, learner))

The mixin then provides: the settings (``self.stage2``), the Stage I anchor from
``ANCHOR_PATH`` (required to train, optional to evaluate: a checkpoint's own anchor wins),
the training step and loss (override `stage2_outputs` / `stage2_loss` for another loss, e.g.
DePT's), the anchor-branch feature cache (once per class set, never per step), scoring at
evaluation (see below; override `scored_branches` to score with the learned prompt otherwise,
e.g. DePT's fusion with its head), the trained class names in checkpoints, results-file extras,
and the position-matrix export after training.

Scoring (``TRAINER.ANCHOROPT.SCORING_MODE``, `anchoropt.method.scoring`): by default per evaluation
set, as the official code does per split: the learned prompt when every evaluated class was trained
on (base test, ImageNet variants), the ensemble for every class otherwise (new, all, cross-dataset);
``per_class`` mixes the two by class name.

``TRAINER.ANCHOROPT.LEGACY`` reproduces the official code's algorithm for users who must match
released numbers: read-out at EOT - ANCHOR_LEN (the "." for one anchor token) and a fresh Gumbel
sample at evaluation (the official code draws that noise in every forward pass, so in LEGACY mode
the normal prompts are re-encoded for every test batch instead of once per evaluation); per
variant also MaPLe's deep anchor read (one position early, hard index) and CoCoOp's frozen Θ and
meta-net. Row-wise hard Gumbel-Softmax is the paper's formulation and the default either way.
"""

from __future__ import annotations

import functools
import os.path as osp
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from anchoropt.errors import CheckpointError, ConfigError
from anchoropt.method.anchor_checkpoint import ANCHOR_FILE_NAME, load_anchor
from anchoropt.method.losses import anchoropt_loss, check_loss_settings
from anchoropt.method.position_export import EXTRAS_KEY, export_positions, position_settings
from anchoropt.method.positions import order_text
from anchoropt.method.scoring import (
    RULE_DESCRIPTIONS,
    SCORING_MODE_KEY,
    SCORING_MODES,
    combine_logits,
    needs_anchor_logits,
    scoring_rule,
    seen_mask_for,
)
from anchoropt.models.clip_parts import normalize
from anchoropt.models.stage2_base import check_stage2_model
from trainers.anchoropt_config import ignored_setting_warnings

ANCHOR_PATH_KEY = "TRAINER.ANCHOROPT.ANCHOR_PATH"
STAGE1_TRAINER = "AnchorOPT_StageI"


@dataclass(frozen=True)
class StageIISettings:
    """``TRAINER.ANCHOROPT`` as Stage II uses it, validated once."""

    n_ctx: int
    anchor_len: int
    ctx_init: str
    position_mode: str
    gumbel_temp: float
    sinkhorn_iters: int
    ce_weight: float
    kd_weight: float
    kd_temperature: float
    scoring_mode: str
    anchor_path: str
    legacy: bool

    @classmethod
    def from_cfg(cls, cfg: Any) -> "StageIISettings":
        c = cfg.TRAINER.ANCHOROPT
        settings = cls(
            n_ctx=int(c.N_CTX),
            anchor_len=int(c.ANCHOR_LEN),
            ctx_init=str(c.CTX_INIT),
            position_mode=str(c.POSITION_MODE),
            gumbel_temp=float(c.GUMBEL_TEMP),
            sinkhorn_iters=int(c.SINKHORN_ITERS),
            ce_weight=float(c.PROMPT_CE_WEIGHT),
            kd_weight=float(c.KD_WEIGHT),
            kd_temperature=float(c.KD_TEMPERATURE),
            scoring_mode=str(c.SCORING_MODE),
            anchor_path=str(c.ANCHOR_PATH),
            legacy=bool(c.LEGACY),
        )
        check_loss_settings(settings.ce_weight, settings.kd_weight, settings.kd_temperature)
        if settings.ce_weight == 0 and settings.kd_weight == 0:
            raise ConfigError("TRAINER.ANCHOROPT.PROMPT_CE_WEIGHT and KD_WEIGHT are both 0: there is nothing to train")
        if settings.scoring_mode not in SCORING_MODES:
            raise ConfigError(
                f"{SCORING_MODE_KEY}: unknown scoring mode '{settings.scoring_mode}' "
                f"(expected one of {', '.join(SCORING_MODES)})"
            )
        return settings


def scoring_summary(seen_mask: torch.Tensor, mode: str) -> dict[str, Any]:
    """The rule an evaluation used and how many classes each kind of logits scored (for results files)."""
    rule = scoring_rule(seen_mask, mode)
    total = int(seen_mask.numel())
    seen = int(seen_mask.sum())
    counts = {"normal": 0, "ensemble": 0, "anchor": 0}
    if rule == "per_class":
        counts.update(normal=seen, ensemble=total - seen)
    else:
        counts[rule] = total
    return {
        "mode": mode,
        "rule": rule,
        "rule_text": RULE_DESCRIPTIONS[rule],
        "num_classes": total,
        "seen_classes": seen,
        **{f"{name}_classes": count for name, count in counts.items()},
    }


class AnchorOPTStageII:
    """Mixin for `ClipTrainer` subclasses implementing AnchorOPT Stage II (see the module docstring)."""

    #: Name of the registered model (and of its checkpoint folder under OUTPUT_DIR).
    ANCHOROPT_MODEL_NAME = "prompt_learner"

    model: Any
    trained_classnames: list[str] | None = None
    _anchor_origin: str | None = None  # where the current anchor came from; None until one is loaded
    _path_anchor: torch.Tensor | None = None  # the ANCHOR_PATH anchor (CPU), to compare with a checkpoint's
    _anchor_cache: tuple[tuple[str, ...], torch.Tensor] | None = None
    _eval_state: dict | None = None
    _last_scoring: dict | None = None

    # ---- building -----------------------------------------------------------------------
    @functools.cached_property
    def stage2(self) -> StageIISettings:
        return StageIISettings.from_cfg(self.cfg)

    def learner_options(self) -> dict[str, Any]:
        """Keyword arguments of `AnchorOPTPromptLearner` (and subclasses) from the settings.

        Warns about settings of the baseline's own node (``TRAINER.COOP.N_CTX`` for ``PREC_KEY``
        ``TRAINER.COOP.PREC``, ...) that were set but are not used.
        """
        baseline_node = str(getattr(self, "PREC_KEY", "")).split(".")[1:2]
        for message in ignored_setting_warnings(
            self.cfg, baseline_node[0] if baseline_node else "", self.cfg.TRAINER.NAME
        ):
            warnings.warn(message, UserWarning, stacklevel=2)
        s = self.stage2
        return dict(
            n_ctx=s.n_ctx,
            anchor_len=s.anchor_len,
            ctx_init=s.ctx_init,
            position_mode=s.position_mode,
            gumbel_temp=s.gumbel_temp,
            sinkhorn_iters=s.sinkhorn_iters,
            legacy=s.legacy,
        )

    def initial_anchor(self, width: int) -> torch.Tensor | None:
        """The Stage I anchor [ANCHOR_LEN, width] from ANCHOR_PATH (fp32, CPU), or None when it is not set."""
        path = self.stage2.anchor_path
        if not path:
            print(f"{ANCHOR_PATH_KEY} is not set: the anchor must come from a Stage II checkpoint (--model-dir)")
            return None
        record = load_anchor(path, expected_width=width, expected_len=self.stage2.anchor_len)
        trained_on = f", Stage I classes: {len(record.classnames)}" if record.classnames else ""
        print(f"Anchor loaded from {record.path} ({record.source_format} format{trained_on})")
        self._path_anchor = record.anchor.clone()
        self._anchor_origin = str(record.path)
        return record.anchor

    def setup_anchoropt(self, model: torch.nn.Module) -> None:
        """Adopt `model`, optimise its prompt learner (V and Θ; A is a buffer) and register it."""
        check_stage2_model(model, self.cfg.TRAINER.NAME)
        self.model = model.to(self.device)
        learner = self.model.prompt_learner
        trainable = [name for name, p in learner.named_parameters() if p.requires_grad]
        print(f"Parameters to be updated: {trainable}")
        self.register_learner(learner, self.ANCHOROPT_MODEL_NAME)

    def set_classnames(self, classnames: Sequence[str]) -> None:
        """Score another set of classes (the scoring rule is decided against the trained ones)."""
        self.model.set_classnames(classnames)
        self.invalidate_anchor_cache()

    # ---- anchor -------------------------------------------------------------------------
    def _require_anchor(self, purpose: str) -> None:
        if self._anchor_origin is None:
            raise CheckpointError(
                f"{ANCHOR_PATH_KEY} is required to {purpose} {self.cfg.TRAINER.NAME}: set it to the output of Stage I "
                f"(the --output-dir of a {STAGE1_TRAINER} run, or the {ANCHOR_FILE_NAME} inside it) or to a released "
                "anchor checkpoint (anchor_weights/<Dataset>/anchor_prompt_learner/model.pth.tar)"
            )

    def invalidate_anchor_cache(self) -> None:
        self._anchor_cache = None

    def anchor_text_features(self) -> torch.Tensor:
        """Normalised "[A] of <class>." features [C, e]: computed once per class set (and anchor), no grad."""
        key = tuple(self.model.classnames)
        if self._anchor_cache is None or self._anchor_cache[0] != key:
            with torch.no_grad(), self.autocast():
                features = normalize(self.model.anchor_text_features()).detach()
            self._anchor_cache = (key, features)
        return self._anchor_cache[1]

    # ---- training -----------------------------------------------------------------------
    def before_train(self) -> None:
        self._require_anchor("train")
        self.trained_classnames = list(self.model.classnames)
        super().before_train()

    def stage2_loss(self, normal: torch.Tensor, anchor: torch.Tensor | None, label: torch.Tensor):
        """λ₁·CE(z_n) + λ₂·T²·KL(p_ens ‖ p_n)/(B·C); returns (loss, {part: detached value})."""
        s = self.stage2
        return anchoropt_loss(normal, anchor, label, s.ce_weight, s.kd_weight, s.kd_temperature)

    def stage2_outputs(self, image: torch.Tensor, label: torch.Tensor, anchor_text: torch.Tensor | None):
        """The training pass: (z_n, z_a or None without `anchor_text`, extra keyword arguments of `stage2_loss`)."""
        normal, anchor = self.model.branch_logits(image, anchor_text=anchor_text)
        return normal, anchor, {}

    def forward_backward(self, batch: dict) -> dict:
        image, label = self.parse_batch_train(batch)
        anchor_text = self.anchor_text_features() if self.stage2.kd_weight > 0 else None
        with self.autocast():
            normal, anchor, extra = self.stage2_outputs(image, label, anchor_text)
            loss, parts = self.stage2_loss(normal, anchor, label, **extra)
        self.optimize(loss)
        self.step_lr_if_epoch_done()
        summary = {"loss": loss.item(), **{name: float(value) for name, value in parts.items()}}
        summary["acc"] = (normal.argmax(1) == label).float().mean().item() * 100
        return summary

    def after_train(self) -> None:
        super().after_train()
        self.export_positions(self.output_dir)

    def export_positions(self, directory: str) -> str:
        """Write positions.png and positions.txt into `directory`; return the chosen order."""
        positions = self.model.prompt_learner.positions
        order = export_positions(positions, osp.join(directory, "positions.png"), osp.join(directory, "positions.txt"))
        print(f"Position matrix ({positions.mode}) written to {osp.join(directory, 'positions.png')}; order: {order}")
        return order

    # ---- evaluation ---------------------------------------------------------------------
    def _prompts_vary_per_batch(self) -> bool:
        positions = self.model.prompt_learner.positions
        return positions.legacy and positions.trainable

    def before_evaluation(self) -> None:
        self._require_anchor("evaluate")
        mode = self.stage2.scoring_mode
        trained = self.trained_classnames
        if trained is None:
            print("Trained classes unknown: every class counts as unseen")
        seen = seen_mask_for(self.model.classnames, trained or [])
        per_batch = self._prompts_vary_per_batch() or not self.model.PROMPTS_FIXED_IN_EVAL
        with self.autocast():
            prompt_state = None if per_batch else self.model.prompt_state()
        self._eval_state = {
            "seen": seen.to(self.device),
            "anchor_text": self.anchor_text_features() if needs_anchor_logits(seen, mode) else None,
            "prompt_state": prompt_state,
            "per_batch": per_batch,
        }
        self._last_scoring = scoring_summary(seen, mode)
        positions = self.model.prompt_learner.positions
        matrix = positions.deterministic()
        note = " (LEGACY: P is sampled for every batch)" if self._prompts_vary_per_batch() else ""
        print(
            f"Scoring: {self._last_scoring}; position order: "
            f"{order_text(matrix, positions.num_ctx, positions.anchor_len)}{note}"
        )

    def after_evaluation(self) -> None:
        self._eval_state = None

    def scored_branches(self, image: torch.Tensor, prompt_state: Any, anchor_text: torch.Tensor | None):
        """The evaluation pass: (logits scored for trained classes, z_a or None); the per-class rule combines them."""
        return self.model.branch_logits(image, prompt_state, anchor_text)

    def model_inference(self, image: torch.Tensor) -> torch.Tensor:
        state = self._eval_state
        prompt_state = None if state["per_batch"] else state["prompt_state"]
        normal, anchor = self.scored_branches(image, prompt_state, state["anchor_text"])
        return combine_logits(normal, anchor, state["seen"], self.stage2.scoring_mode)

    def results_extras(self) -> dict:
        positions = self.model.prompt_learner.positions
        matrix = positions.deterministic()
        return {
            "scoring": dict(self._last_scoring or {}),
            "anchor": {"source": self._anchor_origin, "anchor_len": positions.anchor_len},
            "positions": {
                "mode": positions.mode,
                "legacy": positions.legacy,
                "order": order_text(matrix, positions.num_ctx, positions.anchor_len),
            },
            "trained_classes": len(self.trained_classnames or []),
        }

    # ---- checkpoints --------------------------------------------------------------------
    def checkpoint_extras(self, name: str) -> dict:
        if name != self.ANCHOROPT_MODEL_NAME:
            return {}
        extras = {
            "trained_classnames": list(self.trained_classnames or []),
            "anchor_source": self._anchor_origin,
            **position_settings(self.model.prompt_learner.positions),
        }
        return {EXTRAS_KEY: extras}

    def on_checkpoint_loaded(self, name: str, checkpoint: dict) -> None:
        if name != self.ANCHOROPT_MODEL_NAME:
            return
        extras = checkpoint.get(EXTRAS_KEY) or {}
        trained = extras.get("trained_classnames")
        if trained is None:
            print(
                "Warning: the checkpoint does not list the classes it was trained on; every class is scored as unseen"
            )
        self.trained_classnames = list(trained) if trained is not None else None
        same_anchor = self._compare_anchors(checkpoint["state_dict"].get("anchor"))
        source = extras.get("anchor_source")
        # A resumed run (same ANCHOR_PATH, same anchor) reports the provenance an uninterrupted run does.
        if not (same_anchor and source == self._anchor_origin):
            self._anchor_origin = f"checkpoint (Stage I anchor: {source})" if source else "checkpoint"
        self.invalidate_anchor_cache()
        positions = self.model.prompt_learner.positions
        trained_mode = extras.get("position_mode")
        if trained_mode is not None and (
            trained_mode != positions.mode or extras.get("legacy", False) != positions.legacy
        ):
            print(
                f"Note: the checkpoint was trained with POSITION_MODE={trained_mode}, LEGACY={extras.get('legacy')}; "
                f"evaluating with POSITION_MODE={positions.mode}, LEGACY={positions.legacy}"
            )

    def _compare_anchors(self, stored: torch.Tensor | None) -> bool:
        """Whether the checkpoint's anchor equals the ANCHOR_PATH one (False when either is absent)."""
        if self._path_anchor is None or stored is None:
            return False
        path = self.stage2.anchor_path
        if torch.equal(self._path_anchor, stored.detach().float().cpu()):
            print(f"The checkpoint's anchor equals the one at {ANCHOR_PATH_KEY}={path}")
            return True
        print(
            f"Note: the checkpoint's anchor differs from the one at {ANCHOR_PATH_KEY}={path}; using the "
            "checkpoint's (the anchor the prompt was trained with)"
        )
        return False
