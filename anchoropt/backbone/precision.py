"""Numeric precision policy for CLIP-based trainers, from the config's ``PREC`` string.

- ``fp32``: fp32 weights, no autocast.
- ``fp16``: CLIP's weights converted to fp16 with `clip.model.convert_weights` (the original
  CoOp setting). CUDA only: on other devices it falls back to fp32 with one warning.
- ``amp``: fp32 weights, autocast. On CUDA fp16 with a GradScaler, or bf16 (no scaler) when
  ``amp_dtype="bf16"`` and the GPU supports it. On CPU, amp is allowed and uses bf16 autocast
  (the only half type CPU autocast handles well), without a scaler.

Keep learnable prompt parameters in fp32 in every mode: the text encoder casts its input to
the weights' dtype, so fp16 weights still receive fp32 master parameters.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import ContextManager

import torch
from clip.model import convert_weights
from torch import nn

from anchoropt.errors import ConfigError

PRECISIONS = ("fp32", "fp16", "amp")
AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

# Fallback warnings already given in this process: (requested, device type).
_warned: set[tuple[str, str]] = set()


def _warn_once(key: tuple[str, str], message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, stacklevel=3)


class Precision:
    """How weights are stored, which autocast runs, and how a loss is back-propagated."""

    def __init__(self, prec: str, device: str | torch.device = "cpu", amp_dtype: str = "fp16") -> None:
        if prec not in PRECISIONS:
            raise ConfigError(f"PREC={prec!r} is not supported; expected one of {', '.join(PRECISIONS)}")
        if amp_dtype not in AMP_DTYPES:
            raise ConfigError(f"amp dtype {amp_dtype!r} is not supported; expected one of {', '.join(AMP_DTYPES)}")
        self.requested = prec
        self.device = torch.device(device)
        is_cuda = self.device.type == "cuda"

        if prec == "fp16" and not is_cuda:
            _warn_once(
                ("fp16", self.device.type), f"PREC=fp16 needs a CUDA device; running in fp32 on {self.device.type}"
            )
            prec = "fp32"
        self.prec = prec

        self.autocast_dtype: torch.dtype | None = None
        if prec == "amp":
            if not is_cuda:
                self.autocast_dtype = torch.bfloat16
            elif amp_dtype == "bf16" and not torch.cuda.is_bf16_supported():
                _warn_once(
                    ("amp-bf16", self.device.type), "bf16 autocast is not supported by this GPU; using fp16 autocast"
                )
                self.autocast_dtype = torch.float16
            else:
                self.autocast_dtype = AMP_DTYPES[amp_dtype]

        self.scaler: torch.amp.GradScaler | None = None
        if self.autocast_dtype == torch.float16:
            self.scaler = torch.amp.GradScaler(self.device.type)

    def __repr__(self) -> str:
        return f"Precision(prec={self.prec!r}, device={str(self.device)!r}, autocast={self.autocast_dtype})"

    @property
    def model_dtype(self) -> torch.dtype:
        """The dtype of CLIP's converted weights (linear/attention/projection layers)."""
        return torch.float16 if self.prec == "fp16" else torch.float32

    def apply(self, clip_model: nn.Module) -> nn.Module:
        """Convert a loaded CLIP in place to this policy's weight dtype and return it."""
        clip_model.float()
        if self.prec == "fp16":
            convert_weights(clip_model)
        return clip_model

    def autocast(self) -> ContextManager:
        """Context for forward passes: autocast for amp, a no-op otherwise."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """zero_grad, backward (scaled under fp16 amp), optimizer step (skipped on inf/nan when scaled)."""
        optimizer.zero_grad()
        if self.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()


def non_finite_loss_advice(prec_key: str, prec: str) -> str:
    """What to change after a NaN/inf loss, for the precision a run actually used (``Precision.prec``)."""
    if prec == "fp16":
        return f"{prec_key} is fp16, whose narrow range is the usual cause: rerun with {prec_key} fp32 (or amp)"
    if prec == "amp":
        return f"{prec_key} is amp: rerun with {prec_key} fp32, or lower OPTIM.LR"
    return f"{prec_key} is already fp32 (switching to amp or fp16 will not help): lower OPTIM.LR or check the inputs"


def apply_precision(clip_model: nn.Module, prec: str, device: str | torch.device = "cpu") -> Precision:
    """Build the policy for (`prec`, `device`), apply it to `clip_model`, and return it."""
    policy = Precision(prec, device)
    policy.apply(clip_model)
    return policy
