"""Builders for checkpoints in the official (Dassl) anchor format, benign and malicious."""

import builtins
import contextlib
import os
import subprocess
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler

DASSL_SCHEDULER_MODULE = "dassl.optim.lr_scheduler"


def _warmup_scheduler_class() -> type:
    """A scheduler shaped like Dassl's ConstantWarmupScheduler (a `successor` wrapped by a warm-up)."""

    class ConstantWarmupScheduler(LRScheduler):
        def __init__(self, optimizer, successor, warmup_epoch, cons_lr, last_epoch=-1):
            self.successor = successor
            self.warmup_epoch = warmup_epoch
            self.cons_lr = cons_lr
            super().__init__(optimizer, last_epoch)

        def get_lr(self):
            if self.last_epoch >= self.warmup_epoch:
                return self.successor.get_last_lr()
            return [self.cons_lr for _ in self.base_lrs]

    ConstantWarmupScheduler.__module__ = DASSL_SCHEDULER_MODULE
    ConstantWarmupScheduler.__qualname__ = "ConstantWarmupScheduler"
    return ConstantWarmupScheduler


@contextlib.contextmanager
def fake_dassl_modules() -> Iterator[type]:
    """Make `dassl.optim.lr_scheduler.ConstantWarmupScheduler` importable (for pickling) and remove it afterwards."""
    names = ("dassl", "dassl.optim", DASSL_SCHEDULER_MODULE)
    saved = {name: sys.modules.get(name) for name in names}
    scheduler_class = _warmup_scheduler_class()
    modules = {name: types.ModuleType(name) for name in names}
    modules[DASSL_SCHEDULER_MODULE].ConstantWarmupScheduler = scheduler_class
    sys.modules.update(modules)
    try:
        yield scheduler_class
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def official_checkpoint(
    anchor: torch.Tensor, warmup_class: type, pickle_scheduler_object: bool = False, epoch: int = 100
) -> dict:
    """A checkpoint dict with the keys, dtypes and pickled objects of the released anchor files.

    `warmup_class` is the class yielded by `fake_dassl_modules()`, inside which the dict must be saved.
    """
    parameter = torch.nn.Parameter(anchor.detach().clone().half())
    optimizer = torch.optim.SGD([parameter], lr=0.002, momentum=0.9, weight_decay=5e-4)
    successor = CosineAnnealingLR(optimizer, T_max=float(epoch))
    warmup = warmup_class(optimizer, successor, warmup_epoch=1, cons_lr=1e-5)
    parameter.grad = torch.ones_like(parameter)
    optimizer.step()
    warmup.step()
    state = OrderedDict(
        anchor_ctx_1=anchor.detach().clone().half(),  # the given values exactly, not the stepped ones
        token_prefix=torch.zeros(3, 1, anchor.shape[1], dtype=torch.float16),
    )
    return {
        "state_dict": state,
        "epoch": epoch,
        "optimizer": optimizer.state_dict(),
        "scheduler": warmup if pickle_scheduler_object else warmup.state_dict(),
        "val_result": None,
    }


def write_official_checkpoint(
    path: Path, anchor: torch.Tensor, pickle_scheduler_object: bool = False, epoch: int = 100
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with fake_dassl_modules() as warmup_class:
        torch.save(official_checkpoint(anchor, warmup_class, pickle_scheduler_object, epoch), path)
    return path


class ShellPayload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvalPayload(ShellPayload):
    def __reduce__(self):
        return (builtins.eval, (f"__import__('pathlib').Path({str(self.marker)!r}).touch()",))


class SubprocessPayload(ShellPayload):
    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


def write_malicious_checkpoint(path: Path, payload: ShellPayload, anchor: torch.Tensor) -> Path:
    """An official-format checkpoint with `payload` hidden inside the scheduler state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with fake_dassl_modules() as warmup_class:
        checkpoint = official_checkpoint(anchor, warmup_class)
        checkpoint["scheduler"]["hook"] = payload
        torch.save(checkpoint, path)
    return path
