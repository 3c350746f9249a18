"""Load a frozen CLIP (`clip.model.CLIP`) from a local file, the clip cache, or a download.

Written once for every trainer. Both formats OpenAI uses are accepted (TorchScript archive,
plain state dict) for any CLIP size; the model is always built by `clip.model.build_model`,
so a tiny test CLIP takes the same path as ViT-B/16.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from dataclasses import dataclass
from typing import Sequence

import clip
import torch
from clip.model import CLIP, build_model

from anchoropt.errors import CheckpointError, ConfigError

# Keys every CLIP state dict has; used to recognise one and to say what is missing.
_REQUIRED_KEYS = (
    "positional_embedding",
    "text_projection",
    "token_embedding.weight",
    "ln_final.weight",
    "logit_scale",
)
# Scalars stored in the released TorchScript archives; build_model drops them.
_RELEASE_SCALARS = ("input_resolution", "context_length", "vocab_size")

PATH_KEY = "MODEL.BACKBONE.PATH"
NAME_KEY = "MODEL.BACKBONE.NAME"


def default_cache_dir() -> str:
    """The directory the `clip` package downloads to by default."""
    return os.path.expanduser("~/.cache/clip")


def available_backbones() -> list[str]:
    return list(clip.available_models())


def cached_weights_path(name: str, download_root: str | None = None) -> str:
    """Where the `clip` package keeps the weights of backbone `name`."""
    models = clip.clip._MODELS
    if name not in models:
        raise ConfigError(f"Unknown CLIP backbone {NAME_KEY}={name!r}; available: {', '.join(models)}")
    return os.path.join(download_root or default_cache_dir(), os.path.basename(models[name]))


def load_clip(
    name: str = "ViT-B/16",
    path: str = "",
    device: str | torch.device = "cpu",
    download_root: str | None = None,
) -> CLIP:
    """A frozen fp32 CLIP in eval mode on `device`.

    Resolution order: the local file `path` (if given, `name` is not used), then the clip cache
    (``<download_root or ~/.cache/clip>/<release file name>``), then a download by the clip
    package. Precision changes (fp16, amp) are applied afterwards by `precision.Precision`.
    """
    if path:
        file = os.path.expanduser(str(path))
        if not os.path.isfile(file):
            raise CheckpointError(
                f"{PATH_KEY}={path!r}: no such file (expected a CLIP TorchScript archive such as "
                f"ViT-B-16.pt, or a CLIP state dict saved with torch.save)"
            )
    else:
        file = _cached_or_downloaded(name, download_root)
    state_dict = read_clip_state_dict(file)
    model = build_clip_from_state_dict(state_dict, source=file)
    # What was loaded, for results files, tables and caches (see `backbone_identity`).
    model.anchoropt_backbone = backbone_identity(model, name="" if path else name, path=file if path else "")
    return model.to(device)


def _cached_or_downloaded(name: str, download_root: str | None) -> str:
    target = cached_weights_path(name, download_root)
    if os.path.isfile(target):
        return target
    url = clip.clip._MODELS[name]
    root = os.path.dirname(target)
    try:
        return _download(url, root)
    except Exception as exc:  # offline, proxy, disk full, checksum: all mean "no usable file"
        raise CheckpointError(
            f"CLIP weights for {name!r} are not available offline and could not be downloaded "
            f"({type(exc).__name__}: {exc}). Put the file {os.path.basename(target)} "
            f"(from {url}) at {target}, or set {PATH_KEY} to a local CLIP weights file."
        ) from exc


def _download(url: str, root: str) -> str:
    """Download through the clip package (checks the SHA256 in the URL); tests replace this."""
    return clip.clip._download(url, root)


def read_clip_state_dict(file: str) -> dict[str, torch.Tensor]:
    """The CLIP state dict held by `file`, a TorchScript archive or a plain state dict."""
    if _is_torchscript_archive(file):
        try:
            with warnings.catch_warnings():
                # torch.jit.load is deprecated upstream; the released weights still use the format.
                warnings.simplefilter("ignore", FutureWarning)
                archive = torch.jit.load(file, map_location="cpu")
            state_dict = dict(archive.state_dict())
        except Exception as exc:
            raise CheckpointError(
                f"CLIP weights file {file} looks like a TorchScript archive but cannot be read "
                f"({type(exc).__name__}: {exc}); is it truncated? Delete it and download it again."
            ) from exc
    else:
        try:
            state_dict = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(
                f"CLIP weights file {file} is neither a TorchScript archive nor a state dict "
                f"loadable with torch.load(weights_only=True) ({type(exc).__name__}: {exc}); "
                f"if it is a partial download, delete it and download it again"
            ) from exc
    _check_clip_state_dict(state_dict, file)
    return state_dict


def _is_torchscript_archive(file: str) -> bool:
    # TorchScript archives hold `constants.pkl` (and code/); torch.save zips do not.
    if not zipfile.is_zipfile(file):
        return False
    with zipfile.ZipFile(file) as zf:
        return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in zf.namelist())


def _check_clip_state_dict(state_dict: object, file: str) -> None:
    if not isinstance(state_dict, dict):
        raise CheckpointError(
            f"CLIP weights file {file} holds a {type(state_dict).__name__}, expected a CLIP "
            f"state dict (a dict of tensors with keys such as 'text_projection')"
        )
    missing = [k for k in _REQUIRED_KEYS if k not in state_dict]
    has_visual = any(str(k).startswith("visual.") for k in state_dict)
    if missing or not has_visual:
        missing += [] if has_visual else ["visual.*"]
        raise CheckpointError(f"CLIP weights file {file} is not a CLIP state dict: missing {', '.join(missing)}")


def build_clip_from_state_dict(state_dict: dict[str, torch.Tensor], source: str = "<state dict>") -> CLIP:
    """Build with `clip.model.build_model` (sizes inferred), then return it frozen in fp32.

    build_model loads the weights into fp16 modules; the weights are loaded a second time into
    the fp32 model so fp32 checkpoints keep their full precision.
    """
    weights = {k: v for k, v in state_dict.items() if k not in _RELEASE_SCALARS}
    try:
        model = build_model(dict(weights))
        model.float()
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
    except (RuntimeError, KeyError, ValueError, AssertionError) as exc:
        raise CheckpointError(
            f"CLIP weights file {source} does not describe a CLIP model clip.model.build_model "
            f"can build ({type(exc).__name__}: {exc})"
        ) from exc
    model.eval()
    model.requires_grad_(False)
    return model


def check_input_size(clip_model: CLIP, input_size: int | Sequence[int]) -> None:
    """Raise ConfigError unless INPUT.SIZE equals the image encoder's input resolution."""
    expected = int(clip_model.visual.input_resolution)
    sizes = [int(input_size)] if isinstance(input_size, int) else [int(s) for s in input_size]
    if not sizes or any(s != expected for s in sizes):
        raise ConfigError(
            f"INPUT.SIZE={tuple(sizes)} does not match the CLIP image encoder, which expects ({expected}, {expected})"
        )


@dataclass(frozen=True)
class ModelDims:
    """Sizes of a loaded CLIP, read from its modules (vision_* are None for ResNet backbones)."""

    text_width: int
    text_layers: int
    text_heads: int
    context_length: int
    vocab_size: int
    embed_dim: int
    input_resolution: int
    vision_width: int | None
    vision_layers: int | None
    vision_heads: int | None
    vision_patch_size: int | None

    @property
    def is_vit(self) -> bool:
        return self.vision_width is not None


def model_dims(clip_model: CLIP) -> ModelDims:
    text_blocks = clip_model.transformer.resblocks
    visual = clip_model.visual
    vit = hasattr(visual, "transformer")
    return ModelDims(
        text_width=int(clip_model.ln_final.weight.shape[0]),
        text_layers=len(text_blocks),
        text_heads=int(text_blocks[0].attn.num_heads),
        context_length=int(clip_model.positional_embedding.shape[0]),
        vocab_size=int(clip_model.token_embedding.num_embeddings),
        embed_dim=int(clip_model.text_projection.shape[1]),
        input_resolution=int(visual.input_resolution),
        vision_width=int(visual.conv1.weight.shape[0]) if vit else None,
        vision_layers=len(visual.transformer.resblocks) if vit else None,
        vision_heads=int(visual.transformer.resblocks[0].attn.num_heads) if vit else None,
        vision_patch_size=int(visual.conv1.weight.shape[-1]) if vit else None,
    )


# ---- identity: what was loaded -----------------------------------------------------------------
_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str) -> str:
    """sha256 of a file, cached per (path, size, mtime): hashing ViT-B/16 (350 MB) takes about a second."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        _SHA256_CACHE[key] = digest.hexdigest()
    return _SHA256_CACHE[key]


def released_sha256() -> dict[str, str]:
    """``{sha256: model name}`` of OpenAI's released files (the clip package's download URLs carry the sha256)."""
    return {url.rstrip("/").split("/")[-2]: name for name, url in clip.clip._MODELS.items()}


def architecture(clip_model: CLIP) -> dict[str, int | None]:
    dims = model_dims(clip_model)
    return {
        "embed_dim": dims.embed_dim,
        "input_resolution": dims.input_resolution,
        "vision_width": dims.vision_width,
        "vision_layers": dims.vision_layers,
        "vision_patch_size": dims.vision_patch_size,
        "text_width": dims.text_width,
        "text_layers": dims.text_layers,
    }


def backbone_identity(clip_model: CLIP, name: str = "", path: str = "") -> dict:
    """What a CLIP was loaded from: ``label`` (what tables show), ``name`` (the OpenAI model, or None),
    ``source`` (name / file), ``file``, ``sha256`` and ``architecture``.

    Loaded by name, the label is the name. Loaded from a file, the file's sha256 is looked up among OpenAI's
    released files, so a ViT-B/16 file loaded by path is labelled ViT-B/16; any other file is labelled
    ``<file name>@<first 8 hex digits of its sha256>``.
    """
    arch = architecture(clip_model)
    if path:
        sha = file_sha256(path)
        known = released_sha256().get(sha)
        base = os.path.basename(path)
        label = known or f"{base}@{sha[:8]}"
        return {"label": label, "name": known, "source": "file", "file": base, "sha256": sha, "architecture": arch}
    url = clip.clip._MODELS.get(name, "")
    sha = url.rstrip("/").split("/")[-2] if url else ""
    return {
        "label": name,
        "name": name,
        "source": "name",
        "file": os.path.basename(url),
        "sha256": sha,
        "architecture": arch,
    }


def loaded_backbone_identity(clip_model: CLIP) -> dict:
    """The identity `load_clip` recorded on ``clip_model`` (a model built otherwise: its architecture only)."""
    identity = getattr(clip_model, "anchoropt_backbone", None)
    if identity is not None:
        return dict(identity)
    return {
        "label": "unknown",
        "name": None,
        "source": "unknown",
        "file": "",
        "sha256": "",
        "architecture": architecture(clip_model),
    }
