"""Learning-rate schedules with Dassl's semantics that save as plain state dicts.

Dassl wraps torch's StepLR / MultiStepLR / CosineAnnealingLR in a warm-up
scheduler derived from ``_LRScheduler``. On current PyTorch that wrapper fails
(it passes ``verbose`` positionally) and its state dict pickles the wrapped
scheduler object, which ``torch.load(weights_only=True)`` refuses. Here the
same torch successors are driven by a small wrapper that reproduces Dassl's
epoch-by-epoch learning rates exactly (the tests compare the values) and whose
state dict nests the successor's state dict instead of the object.

The scheduler is stepped once per epoch (the trainers call ``update_lr`` after
the last batch of an epoch, as CoOp does).
"""

from __future__ import annotations

from typing import Any

import torch

from anchoropt.errors import ConfigError

AVAILABLE_SCHEDULERS = ("single_step", "multi_step", "cosine")


def _build_successor(optimizer: torch.optim.Optimizer, optim_cfg: Any):
    name = optim_cfg.LR_SCHEDULER
    stepsize = optim_cfg.STEPSIZE
    if name not in AVAILABLE_SCHEDULERS:
        raise ConfigError(f"OPTIM.LR_SCHEDULER must be one of {list(AVAILABLE_SCHEDULERS)}, got {name!r}")
    if name == "single_step":
        if isinstance(stepsize, (list, tuple)):
            stepsize = stepsize[-1]
        if not isinstance(stepsize, int):
            raise ConfigError(f"OPTIM.STEPSIZE must be an integer for single_step, got {stepsize!r}")
        if stepsize <= 0:
            stepsize = optim_cfg.MAX_EPOCH
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=stepsize, gamma=optim_cfg.GAMMA)
    if name == "multi_step":
        if not isinstance(stepsize, (list, tuple)):
            raise ConfigError(f"OPTIM.STEPSIZE must be a list for multi_step, got {stepsize!r}")
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(stepsize), gamma=optim_cfg.GAMMA)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, float(optim_cfg.MAX_EPOCH))


class WarmupScheduler:
    """Constant or linear warm-up for ``warmup_epoch`` epochs, then ``successor``.

    Mirrors Dassl's ``ConstantWarmupScheduler`` / ``LinearWarmupScheduler``:
    epoch 0 runs at the warm-up LR; at epoch ``warmup_epoch`` the LR is the
    successor's current LR; afterwards the successor is stepped.
    """

    def __init__(self, optimizer, successor, warmup_epoch: int, warmup_type: str, warmup_lr: float) -> None:
        if warmup_type not in ("constant", "linear"):
            raise ConfigError(f"OPTIM.WARMUP_TYPE must be 'constant' or 'linear', got {warmup_type!r}")
        self.optimizer = optimizer
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        self.warmup_type = warmup_type
        self.warmup_lr = warmup_lr
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = 0
        self._apply(self._warmup_lrs())

    def _warmup_lrs(self) -> list[float]:
        if self.warmup_type == "constant" or self.last_epoch == 0:
            return [self.warmup_lr for _ in self.base_lrs]
        return [lr * self.last_epoch / self.warmup_epoch for lr in self.base_lrs]

    def _apply(self, lrs: list[float]) -> None:
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = list(lrs)

    def step(self) -> None:
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step()
            self._last_lr = self.successor.get_last_lr()
            return
        self.last_epoch += 1
        if self.last_epoch >= self.warmup_epoch:
            self._apply(self.successor.get_last_lr())
        else:
            self._apply(self._warmup_lrs())

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    def state_dict(self) -> dict:
        return {
            "last_epoch": self.last_epoch,
            "warmup_epoch": self.warmup_epoch,
            "warmup_type": self.warmup_type,
            "warmup_lr": self.warmup_lr,
            "_last_lr": list(self._last_lr),
            "successor": self.successor.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.successor.load_state_dict(state["successor"])
        self.last_epoch = state["last_epoch"]
        self._apply(state["_last_lr"])


def build_lr_scheduler(optimizer: torch.optim.Optimizer, optim_cfg: Any):
    """Build the per-epoch LR schedule described by ``OPTIM.*`` (Dassl's keys)."""
    scheduler = _build_successor(optimizer, optim_cfg)
    if optim_cfg.WARMUP_EPOCH > 0:
        if not optim_cfg.WARMUP_RECOUNT:
            scheduler.last_epoch = optim_cfg.WARMUP_EPOCH
        warmup_lr = optim_cfg.WARMUP_CONS_LR if optim_cfg.WARMUP_TYPE == "constant" else optim_cfg.WARMUP_MIN_LR
        scheduler = WarmupScheduler(optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_TYPE, warmup_lr)
    return scheduler
