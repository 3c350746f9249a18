"""Numeric precision policy for CLIP-based trainers, from the config's ``PREC`` string.

- ``fp32``: fp32 weights, no autocast.
- ``fp16`` / ``bf16``: the frozen CLIP's matrix weights (linear, attention, convolution,
  projections) stored in that half type, as CoOp's ``clip.model.convert_weights`` does for fp16;
  its LayerNorms, embeddings and logit scale stay fp32. No autocast and no loss scaler: the
  learned tensors stay fp32 and receive fp32 gradients (the casts into the frozen dtype happen at
  the model's boundaries, see ``TextEncoder.encode_group``). bf16 keeps fp32's exponent range, so
  it does not overflow where fp16 does, at 8 instead of 11 significant bits.
- ``amp``: fp32 weights, autocast. On CUDA fp16 with a GradScaler, or bf16 (no scaler) when
  ``amp_dtype="bf16"`` and the GPU supports it. On CPU, amp is allowed and uses bf16 autocast
  (the only half type CPU autocast handles well), without a scaler.

Half-precision weights are meant for GPUs. On a CPU they run (torch has fp16 and bf16 CPU
kernels) but usually slower than fp32, and the shipped configs all say fp16; so on a CPU they
are used only when asked for explicitly (``half_on_cpu``, the config key
``MODEL.BACKBONE.HALF_ON_CPU``); otherwise the run falls back to fp32 with one warning.

Keep learnable prompt parameters in fp32 in every mode: the optimiser then updates fp32 master
values (a half-precision step of ``lr * grad`` is often below half an ulp of the parameter and
would be lost), and checkpoints hold fp32 tensors whatever precision trained them.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, ContextManager

import torch
from torch import nn

from anchoropt.errors import ConfigError

PRECISIONS = ("fp32", "fp16", "bf16", "amp")
HALF_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
AMP_DTYPES = HALF_DTYPES
HALF_ON_CPU_KEY = "MODEL.BACKBONE.HALF_ON_CPU"

# Fallback warnings already given in this process: (requested, device type).
_warned: set[tuple[str, str]] = set()


def _warn_once(key: tuple[str, str], message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, stacklevel=3)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float16`` -> ``"float16"``."""
    return str(dtype).removeprefix("torch.")


def convert_matrix_weights(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Store `model`'s linear, convolution and attention weights and CLIP's projections in `dtype`, in place.

    The same parameters as ``clip.model.convert_weights`` (which knows fp16 only); LayerNorms,
    embeddings, ``class_embedding`` and ``logit_scale`` keep their dtype.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            tensors = [module.weight, module.bias]
        elif isinstance(module, nn.MultiheadAttention):
            names = ("in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight", "v_proj_weight")
            tensors = [getattr(module, name) for name in names + ("bias_k", "bias_v")]
        else:
            tensors = []
        tensors += [getattr(module, name, None) for name in ("text_projection", "proj")]
        for tensor in tensors:
            if isinstance(tensor, torch.Tensor):
                tensor.data = tensor.data.to(dtype)
    return model


class Precision:
    """How weights are stored, which autocast runs, and how a loss is back-propagated."""

    def __init__(
        self, prec: str, device: str | torch.device = "cpu", amp_dtype: str = "fp16", half_on_cpu: bool = False
    ) -> None:
        if prec not in PRECISIONS:
            raise ConfigError(f"PREC={prec!r} is not supported; expected one of {', '.join(PRECISIONS)}")
        if amp_dtype not in AMP_DTYPES:
            raise ConfigError(f"amp dtype {amp_dtype!r} is not supported; expected one of {', '.join(AMP_DTYPES)}")
        self.requested = prec
        self.device = torch.device(device)
        is_cuda = self.device.type == "cuda"

        if prec in HALF_DTYPES and not is_cuda and not half_on_cpu:
            _warn_once(
                (prec, self.device.type),
                f"PREC={prec} needs a CUDA device; running in fp32 on {self.device.type} "
                f"({HALF_ON_CPU_KEY} True runs it in {prec} there)",
            )
            prec = "fp32"
        if prec == "bf16" and is_cuda and not torch.cuda.is_bf16_supported(including_emulation=False):
            _warn_once(("bf16", self.device.type), "PREC=bf16 is not supported by this GPU; running in fp32")
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

    def describe(self) -> dict[str, Any]:
        """What ran, for results files: the PREC asked for and the one used (they differ after a fallback)."""
        return {
            "requested": self.requested,
            "used": self.prec,
            "frozen_weights": dtype_name(self.model_dtype),
            "autocast": dtype_name(self.autocast_dtype) if self.autocast_dtype is not None else None,
            "loss_scaling": self.scaler is not None,
            "device": self.device.type,
        }

    @property
    def model_dtype(self) -> torch.dtype:
        """The dtype of CLIP's converted weights (linear/attention/projection layers)."""
        return HALF_DTYPES.get(self.prec, torch.float32)

    def apply(self, clip_model: nn.Module) -> nn.Module:
        """Convert a loaded CLIP in place to this policy's weight dtype and return it."""
        clip_model.float()
        if self.model_dtype != torch.float32:
            convert_matrix_weights(clip_model, self.model_dtype)
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
    if prec == "bf16":
        return f"{prec_key} is bf16 (fp32's range, fewer digits): rerun with {prec_key} fp32, or lower OPTIM.LR"
    if prec == "amp":
        return f"{prec_key} is amp: rerun with {prec_key} fp32, or lower OPTIM.LR"
    return f"{prec_key} is already fp32 (switching to amp or fp16 will not help): lower OPTIM.LR or check the inputs"


def apply_precision(
    clip_model: nn.Module, prec: str, device: str | torch.device = "cpu", half_on_cpu: bool = False
) -> Precision:
    """Build the policy for (`prec`, `device`), apply it to `clip_model`, and return it."""
    policy = Precision(prec, device, half_on_cpu=half_on_cpu)
    policy.apply(clip_model)
    return policy
