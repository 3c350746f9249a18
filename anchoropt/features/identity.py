"""What a cached image feature depends on, turned into one key.

A feature of a frozen image encoder is a function of the weights, the precision (and device kind)
it ran in, the transform that made the input tensor, the image file itself and the code that
runs the tower. Each part is described here as plain JSON-able data; `cache_key` hashes them
together, so changing any part selects another cache entry (nothing stale is ever read).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterable, Sequence

import torch

from anchoropt.errors import DataError

#: Bumped whenever the way features are computed or stored changes (old entries are then never read).
FEATURE_FORMAT_VERSION = 1


def architecture_digest(model: torch.nn.Module) -> str:
    """sha256 over the names, shapes and dtypes of a model's tensors (not their values): cheap, and any
    difference in architecture or storage dtype changes it."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
    return digest.hexdigest()


def backbone_identity(name: str, path: str, module: torch.nn.Module) -> dict[str, Any]:
    """Which weights `module` (CLIP, or its image tower) was loaded from: the sha256 of
    ``MODEL.BACKBONE.PATH``'s bytes when a file is given, else the release's sha256 (OpenAI's download
    URL carries it; the `clip` package checks it on download), plus the module's architecture and
    storage dtypes. The one place to delegate to a backbone identity recorded at load time."""
    # imported here: the backbone module imports clip, which is slow, and the cache CLI does not need it
    from anchoropt.backbone.loading import file_sha256, released_sha256

    if path:
        weights = {"file_sha256": file_sha256(os.path.expanduser(path))}
    else:
        release = {model: sha for sha, model in released_sha256().items()}.get(name, "")
        weights = {"name": name, "release_sha256": release}
    return {**weights, "tensors": architecture_digest(module)}


def _plain(value: Any) -> Any:
    """yacs values (CfgNode, tuples) as JSON data."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def transform_identity(input_cfg: Any, transform: Any) -> dict[str, Any]:
    """The test transform: every ``INPUT.*`` key (they define it) and the built transform's repr."""
    return {"input": _plain(dict(input_cfg)), "repr": repr(transform)}


def image_list_identity(paths: Sequence[str]) -> dict[str, Any]:
    """The exact image list, in order: sha256 over each file's absolute path, size and mtime, so a
    replaced, added, removed or reordered image changes it."""
    digest = hashlib.sha256()
    for path in paths:
        absolute = os.path.abspath(path)
        try:
            st = os.stat(absolute)
        except OSError as error:
            raise DataError(f"Image file not found or unreadable: {absolute} ({error.strerror})") from None
        digest.update(f"{absolute}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return {"count": len(paths), "sha256": digest.hexdigest()}


def precision_identity(precision: Any, device: torch.device | str) -> dict[str, Any]:
    """The precision in effect (`anchoropt.backbone.Precision`) and the device kind: both change the bits."""
    return {
        "prec": str(getattr(precision, "prec", precision)),
        "autocast": str(getattr(precision, "autocast_dtype", None)),
        "device": torch.device(device).type,
    }


def cache_key(parts: dict[str, Any]) -> str:
    """sha256 of the parts (plus the format version and the torch version) as canonical JSON."""
    full = {**parts, "format": FEATURE_FORMAT_VERSION, "torch": torch.__version__}
    return hashlib.sha256(json.dumps(full, sort_keys=True, default=repr).encode()).hexdigest()


def item_paths(items: Iterable[Any]) -> list[str]:
    """``impath`` of each Dassl ``Datum``."""
    return [item.impath for item in items]
