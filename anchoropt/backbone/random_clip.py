"""Randomly initialised CLIP models (the real `clip.model.CLIP` class) for tests and benchmarks.

No pretrained weights can be downloaded in tests, so they build a small CLIP from a named
spec, save it in the two formats OpenAI's releases come in (plain state dict, TorchScript
archive), and load it back through the same loader the trainers use.
"""

from __future__ import annotations

import copy
import os
import warnings
from typing import Any

import torch
from clip.model import CLIP

from anchoropt.errors import ConfigError

# Keyword arguments of `clip.model.CLIP`. Head counts follow clip's `build_model`, which infers
# them as width // 64, so a saved model rebuilds to the same architecture.
CLIP_SPECS: dict[str, dict[str, int]] = {
    "tiny": dict(
        embed_dim=32,
        image_resolution=32,
        vision_layers=2,
        vision_width=64,
        vision_patch_size=16,
        context_length=77,
        vocab_size=49408,
        transformer_width=64,
        transformer_heads=1,
        transformer_layers=2,
    ),
    "ViT-B/32": dict(
        embed_dim=512,
        image_resolution=224,
        vision_layers=12,
        vision_width=768,
        vision_patch_size=32,
        context_length=77,
        vocab_size=49408,
        transformer_width=512,
        transformer_heads=8,
        transformer_layers=12,
    ),
    "ViT-B/16": dict(
        embed_dim=512,
        image_resolution=224,
        vision_layers=12,
        vision_width=768,
        vision_patch_size=16,
        context_length=77,
        vocab_size=49408,
        transformer_width=512,
        transformer_heads=8,
        transformer_layers=12,
    ),
    "ViT-L/14": dict(
        embed_dim=768,
        image_resolution=224,
        vision_layers=24,
        vision_width=1024,
        vision_patch_size=14,
        context_length=77,
        vocab_size=49408,
        transformer_width=768,
        transformer_heads=12,
        transformer_layers=12,
    ),
}


def build_random_clip(spec: str = "tiny", seed: int = 0) -> CLIP:
    """A frozen fp32 CLIP in eval mode (as `load_clip` returns) with CLIP's own random init.

    The same `seed` gives the same weights; the global RNG state is left untouched.
    """
    if spec not in CLIP_SPECS:
        raise ConfigError(f"Unknown random CLIP spec {spec!r}; available: {', '.join(CLIP_SPECS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(**CLIP_SPECS[spec])
    model.requires_grad_(False)
    return model.float().eval()


def save_clip_state_dict(model: CLIP, path: str | os.PathLike, half: bool = False) -> str:
    """Save `model.state_dict()` with `torch.save` (optionally in fp16, like the released weights)."""
    state = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
        for k, v in model.state_dict().items()
    }
    torch.save(state, path)
    return str(path)


def save_clip_jit_archive(model: CLIP, path: str | os.PathLike) -> str:
    """Save `model` as a TorchScript archive shaped like OpenAI's released ``.pt`` files.

    The archive is traced (forward, encode_image, encode_text) and, like the released files,
    carries the scalar entries ``input_resolution``, ``context_length`` and ``vocab_size`` in
    its state dict, which `clip.model.build_model` has to drop.
    """
    traced_src = copy.deepcopy(model).float().eval().cpu()
    _add_release_scalars(traced_src)
    res = traced_src.visual.input_resolution
    images = torch.zeros(2, 3, res, res)
    tokens = torch.zeros(2, traced_src.positional_embedding.shape[0], dtype=torch.long)
    tokens[:, 0] = 49406
    tokens[:, 1] = 49407
    inputs: dict[str, Any] = {
        "forward": (images, tokens),
        "encode_image": (images,),
        "encode_text": (tokens,),
    }
    with warnings.catch_warnings():
        # torch.jit is deprecated upstream but is the only way to write this file format.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            traced = torch.jit.trace_module(traced_src, inputs)
        torch.jit.save(traced, str(path))
    return str(path)


def _add_release_scalars(model: CLIP) -> None:
    context_length = model.positional_embedding.shape[0]
    vocab_size = model.token_embedding.num_embeddings
    # CLIP keeps these two as plain ints; the released archives hold them as tensors instead.
    for name in ("context_length", "vocab_size"):
        if name in model.__dict__:
            del model.__dict__[name]
    model.register_buffer("input_resolution", torch.tensor(model.visual.input_resolution))
    model.register_buffer("context_length", torch.tensor(context_length))
    model.register_buffer("vocab_size", torch.tensor(vocab_size))
