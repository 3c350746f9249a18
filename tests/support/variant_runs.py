"""Watched train.py runs of the baseline variants (CoCoOp, DePT, with and without AnchorOPT).

    run = run_watched(env, "DePT", out, "OPTIM.MAX_EPOCH", "3")
    run.initial / run.final        # the registered learner's state dict before / after training
    run.frozen_changed             # names of frozen (CLIP) tensors that changed: must be empty
    run.trained_logits             # evaluation logits of the trained trainer on `run.images`

`mean_training_loss` evaluates a trainer's own training loss for a given learner state on fixed
batches (the same random draws for every state), so "the loss fell" does not hinge on one noisy step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

from anchoropt.engine import load_checkpoint
from tests.support.anchoropt_runs import TinyEnv, build_trainer_from_args, record_method, run_train

LEARNER = "prompt_learner"


def learner_state(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.prompt_learner.state_dict().items()}


def frozen_state(trainer) -> dict[str, torch.Tensor]:
    """Every tensor of the model outside the prompt learner (CLIP's weights and buffers)."""
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items() if not k.startswith(LEARNER + ".")}


def evaluation_logits(trainer, images: torch.Tensor) -> torch.Tensor:
    """What the trainer's evaluation returns for `images` (its caches built and dropped as in `test`)."""
    trainer.set_model_mode("eval")
    with torch.no_grad(), trainer.autocast():
        trainer.before_evaluation()
        try:
            return trainer.model_inference(images.to(trainer.device)).float()
        finally:
            trainer.after_evaluation()


def first_test_images(trainer) -> torch.Tensor:
    return next(iter(trainer.test_loader))["img"]


@dataclass
class WatchedRun:
    out: Path
    args: list[str]
    epochs: int
    initial: dict
    final: dict
    checkpoint: dict
    frozen_before: dict
    frozen_after: dict
    images: torch.Tensor
    trained_logits: torch.Tensor
    steps: list = field(default_factory=list)

    @property
    def changed(self) -> set[str]:
        return {k for k in self.initial if not torch.equal(self.initial[k], self.final[k])}

    @property
    def frozen_changed(self) -> set[str]:
        return {k for k in self.frozen_before if not torch.equal(self.frozen_before[k], self.frozen_after[k])}


def run_watched(env: TinyEnv, trainer: str, out: Path, *opts: str, epochs: int = 3) -> WatchedRun:
    """Train `trainer` through train.py on the base classes and record what changed."""
    from anchoropt.engine import TRAINER_REGISTRY

    cls = TRAINER_REGISTRY.get(trainer)
    args = env.args(trainer, out, "OPTIM.MAX_EPOCH", str(epochs), *opts)

    def after(trainer_obj, _):
        images = first_test_images(trainer_obj)
        return learner_state(trainer_obj), frozen_state(trainer_obj), images, evaluation_logits(trainer_obj, images)

    with pytest.MonkeyPatch.context() as mp:
        before = record_method(mp, cls, "before_train", lambda t, _: (learner_state(t), frozen_state(t)))
        steps = record_method(mp, cls, "forward_backward")
        after_calls = record_method(mp, cls, "after_train", after)
        run_train(args)
    ((initial, frozen_before),) = before
    ((final, frozen_after, images, logits),) = after_calls
    checkpoint = load_checkpoint(str(out / LEARNER / f"model.pth.tar-{epochs}"))
    return WatchedRun(
        out=out,
        args=args,
        epochs=epochs,
        initial=initial,
        final=final,
        checkpoint=checkpoint,
        frozen_before=frozen_before,
        frozen_after=frozen_after,
        images=images,
        trained_logits=logits,
        steps=steps,
    )


def eval_args(
    env: TinyEnv, run: WatchedRun, trainer: str, out: Path, *opts: str, subsample: str = "new", dataset=None
) -> list[str]:
    return env.args(
        trainer,
        out,
        *opts,
        subsample=subsample,
        dataset=dataset,
        flags=("--eval-only", "--model-dir", str(run.out), "--load-epoch", str(run.epochs)),
    )


def reloaded_trainer(env: TinyEnv, run: WatchedRun, trainer: str, *opts: str, subsample: str = "base"):
    """A fresh trainer (as train.py builds it) with the run's last checkpoint loaded."""
    fresh = build_trainer_from_args(
        env.args(trainer, run.out.parent / f"{run.out.name}_reload", *opts, subsample=subsample)
    )
    fresh.load_model(str(run.out), epoch=run.epochs)
    return fresh


def mean_training_loss(trainer, state: dict, loss_of: Callable, draws: int = 4) -> float:
    """The loss ``loss_of(trainer, image, label)`` with the learner in `state`, averaged over the train batches
    and `draws` passes (train mode, the same seed for every state)."""
    learner = trainer.model.prompt_learner
    learner.load_state_dict(state)
    trainer.set_model_mode("train")
    torch.manual_seed(0)
    batches = [(b["img"], b["label"]) for b in trainer.train_loader_x]
    losses = []
    with torch.no_grad():
        for _ in range(draws):
            for image, label in batches:
                losses.append(float(loss_of(trainer, image, label)))
    return sum(losses) / len(losses)


def stage2_training_loss(trainer, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """The AnchorOPT Stage II training loss exactly as `AnchorOPTStageII.forward_backward` computes it."""
    anchor_text = trainer.anchor_text_features() if trainer.stage2.kd_weight > 0 else None
    normal, anchor, extra = trainer.stage2_outputs(image, label, anchor_text)
    return trainer.stage2_loss(normal, anchor, label, **extra)[0]
