"""OUR paths, driven through the trainers' own methods (not re-implemented), minus data loading.

`StageIIHarness` is the `AnchorOPTStageII` mixin (shared by CoOp_AnchorOPT and MaPLe_AnchorOPT)
with the few trainer services it calls supplied directly: its ``forward_backward`` is the
training step, ``before_evaluation`` / ``model_inference`` the evaluation. `StageIHarness` is
`AnchorOPT_StageI` built without a data manager: ``forward_backward(None)`` is its image-free step.
Whatever the trainers change in these methods, the benchmark measures.
"""

from __future__ import annotations

from typing import Sequence

import torch

from anchoropt.backbone import Precision
from anchoropt.method.descriptions import encode_descriptions
from bench.setups import Stage1Setup, Stage2Setup
from trainers.anchoropt_stage1 import AnchorOPT_StageI
from trainers.anchoropt_stage2 import AnchorOPTStageII


class _TrainerServices:
    """What `ClipTrainer` provides to the step methods: precision, device, one optimiser step, LR stepping."""

    precision: Precision
    optim: torch.optim.Optimizer
    batch_idx = 0
    num_batches = 1 << 30  # never the last batch: the LR schedule is not part of a step's cost

    @property
    def device(self) -> torch.device:
        return self.precision.device

    def autocast(self):
        return self.precision.autocast()

    def optimize(self, loss: torch.Tensor, names=None) -> None:
        self.precision.backward_and_step(loss, self.optim)

    def step_lr_if_epoch_done(self) -> None:
        pass

    def parse_batch_train(self, batch: dict):
        return batch["img"].to(self.device), batch["label"].to(self.device)


class StageIIHarness(_TrainerServices, AnchorOPTStageII):
    """The Stage II trainer logic around a built model (see the module docstring)."""

    def __init__(
        self, setup: Stage2Setup, precision: Precision, trained_classnames: Sequence[str] | None = None
    ) -> None:
        self.model = setup.model
        self.optim = setup.optimizer
        self.precision = precision
        self.stage2 = setup.settings  # overrides the cached property read from a config
        self._anchor_origin = "benchmark stand-in anchor"
        self.trained_classnames = list(self.model.classnames if trained_classnames is None else trained_classnames)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        return self.forward_backward({"img": images, "label": labels})

    @torch.no_grad()
    def evaluation_setup(self) -> None:
        """What `ClipTrainer.test` does before the first batch (a new class set: anchor features not cached)."""
        self.model.prompt_learner.eval()
        self.invalidate_anchor_cache()
        with self.autocast():
            self.before_evaluation()

    @torch.no_grad()
    def evaluation_batch(self, images: torch.Tensor) -> torch.Tensor:
        """What `ClipTrainer.test` does per batch."""
        with self.autocast():
            return self.model_inference(images.to(self.device)).float()


class StageIHarness(_TrainerServices, AnchorOPT_StageI):
    """`AnchorOPT_StageI` without a data manager: descriptions given as sentences, no images."""

    def __init__(
        self, setup: Stage1Setup, precision: Precision
    ) -> None:  # the trainer's __init__ is skipped on purpose
        self.model = setup.model
        self.optim = setup.optimizer
        self.precision = precision
        self.stage1 = setup.settings
        self.description_features = None

    def encode(self, descriptions: Sequence[Sequence[str]]) -> None:
        """`encode_class_descriptions` without reading a file: once per run, no graph."""
        with self.autocast():
            self.description_features = encode_descriptions(self.model.text_encoder, descriptions)

    def train_step(self) -> dict:
        return self.forward_backward(None)
