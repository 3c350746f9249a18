"""Frozen CLIP backbone: loading, precision policy, and the (truncated) text encoder."""

from anchoropt.backbone.loading import (
    ModelDims,
    available_backbones,
    cached_weights_path,
    check_input_size,
    load_clip,
    model_dims,
)
from anchoropt.backbone.precision import Precision, apply_precision
from anchoropt.backbone.text_encoder import TextEncoder, causal_attention_mask, residual_block_forward

__all__ = [
    "ModelDims",
    "Precision",
    "TextEncoder",
    "apply_precision",
    "available_backbones",
    "cached_weights_path",
    "causal_attention_mask",
    "check_input_size",
    "load_clip",
    "model_dims",
    "residual_block_forward",
]
