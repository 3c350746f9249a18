"""Stage I output: the learned anchor tokens A [N, d], with the class names and settings that produced them.

`load_anchor` also reads the officially released anchors and Dassl-style
output directories:

- a file written by `save_anchor`;
- a Dassl checkpoint file whose ``state_dict`` holds ``anchor_ctx_1``
  (the released ``anchor_weights/<Dataset>/anchor_prompt_learner/model.pth.tar``),
  read without executing pickled code (see `official_checkpoint`);
- a directory: ``<dir>/anchor.pth``, else ``<dir>/anchor_prompt_learner/`` (or
  ``<dir>`` itself when it is that folder) holding ``model.pth.tar`` (released
  name), else the highest ``model.pth.tar-<epoch>``, else ``model-best.pth.tar``.
"""

import io
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from anchoropt.errors import CheckpointError
from anchoropt.fileio import atomic_write_bytes
from anchoropt.method.official_checkpoint import load_official_checkpoint

ANCHOR_FILE_NAME = "anchor.pth"
ANCHOR_FORMAT = "anchoropt.anchor"
ANCHOR_FORMAT_VERSION = 1
OFFICIAL_ANCHOR_KEY = "anchor_ctx_1"
DASSL_ANCHOR_MODEL_DIR = "anchor_prompt_learner"
ANCHOR_LEN_KEY = "TRAINER.ANCHOROPT.ANCHOR_LEN"

_EPOCH_FILE = re.compile(r"^model\.pth\.tar-(\d+)$")


@dataclass
class AnchorRecord:
    anchor: torch.Tensor  # [N, d], fp32, CPU
    classnames: list[str] = field(default_factory=list)  # empty when the file does not say (official files)
    settings: dict[str, Any] = field(default_factory=dict)
    source_format: str = "anchoropt"  # "anchoropt" or "dassl" (official / Dassl checkpoint)
    path: Path | None = None

    @property
    def provenance(self) -> dict[str, Any] | None:
        """What the anchor was learned from (``settings["provenance"]``: Stage I fingerprint, descriptions file
        and its sha256; see `anchoropt.runs.provenance`), or None (released anchors, older files)."""
        found = self.settings.get("provenance")
        return dict(found) if isinstance(found, Mapping) and found else None


def _plain(value: Any, where: str) -> Any:
    """Copy settings into types that torch.load(weights_only=True) accepts (yacs CfgNode is a dict subclass)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(key): _plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{index}]") for index, item in enumerate(value)]
    raise TypeError(f"anchor settings must hold plain Python values; {where} is a {type(value).__name__}")


def _atomic_torch_save(payload: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def save_anchor(path: str | Path, anchor: torch.Tensor, classnames: Sequence[str], settings: Mapping[str, Any]) -> Path:
    """Write the anchor atomically; a directory path gets `ANCHOR_FILE_NAME` inside it."""
    path = Path(path)
    if path.is_dir():
        path = path / ANCHOR_FILE_NAME
    if anchor.dim() != 2:
        raise ValueError(f"anchor must have shape [N, d], got {tuple(anchor.shape)}")
    payload = {
        "format": ANCHOR_FORMAT,
        "version": ANCHOR_FORMAT_VERSION,
        "anchor": anchor.detach().to(device="cpu", dtype=torch.float32).clone(),
        "classnames": [str(name) for name in classnames],
        "settings": _plain(dict(settings), "settings"),
    }
    _atomic_torch_save(payload, path)
    return path


def _dassl_model_file(folder: Path) -> Path | None:
    if (folder / "model.pth.tar").is_file():
        return folder / "model.pth.tar"
    epochs = [(int(match.group(1)), item) for item in folder.iterdir() if (match := _EPOCH_FILE.match(item.name))]
    if epochs:
        return max(epochs)[1]
    if (folder / "model-best.pth.tar").is_file():
        return folder / "model-best.pth.tar"
    return None


def resolve_anchor_file(path: str | Path) -> Path:
    """The checkpoint file a file-or-directory anchor path refers to."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"anchor checkpoint not found: {path} (expected a Stage I output file or directory)")
    if (path / ANCHOR_FILE_NAME).is_file():
        return path / ANCHOR_FILE_NAME
    for folder in (path / DASSL_ANCHOR_MODEL_DIR, path):
        if folder.is_dir() and (found := _dassl_model_file(folder)) is not None:
            return found
    raise CheckpointError(
        f"no anchor checkpoint in directory {path}: expected {ANCHOR_FILE_NAME}, or {DASSL_ANCHOR_MODEL_DIR}/ holding "
        "model.pth.tar, model.pth.tar-<epoch> or model-best.pth.tar"
    )


def _read(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Dassl checkpoints pickle scheduler objects; read them with the allow-list loader.
        return load_official_checkpoint(path)
    except Exception as error:
        raise CheckpointError(f"cannot read anchor checkpoint {path}: {type(error).__name__}: {error}") from error


def _official_anchor(state_dict: Mapping[str, Any], path: Path) -> torch.Tensor:
    if OFFICIAL_ANCHOR_KEY in state_dict:
        return state_dict[OFFICIAL_ANCHOR_KEY]
    suffixed = [key for key in state_dict if str(key).endswith("." + OFFICIAL_ANCHOR_KEY)]
    if len(suffixed) == 1:
        return state_dict[suffixed[0]]
    raise CheckpointError(
        f"checkpoint {path} has no anchor: expected state_dict key '{OFFICIAL_ANCHOR_KEY}', found "
        f"{sorted(map(str, state_dict))}"
    )


def _record_from(content: Any, path: Path) -> AnchorRecord:
    if isinstance(content, Mapping) and content.get("format") == ANCHOR_FORMAT:
        if content.get("version") != ANCHOR_FORMAT_VERSION:
            raise CheckpointError(
                f"anchor checkpoint {path} has format version {content.get('version')}, this toolkit reads "
                f"{ANCHOR_FORMAT_VERSION}"
            )
        return AnchorRecord(
            content["anchor"], list(content["classnames"]), dict(content["settings"]), "anchoropt", path
        )
    if isinstance(content, Mapping) and isinstance(content.get("state_dict"), Mapping):
        settings = {key: content[key] for key in ("epoch",) if isinstance(content.get(key), int)}
        return AnchorRecord(_official_anchor(content["state_dict"], path), [], settings, "dassl", path)
    raise CheckpointError(
        f"{path} is not an anchor checkpoint: expected a file written by the Stage I trainer or a Dassl checkpoint "
        f"with state_dict['{OFFICIAL_ANCHOR_KEY}']"
    )


def load_anchor(path: str | Path, expected_width: int | None = None, expected_len: int | None = None) -> AnchorRecord:
    """Load and check an anchor; the returned tensor is fp32 on the CPU."""
    path = resolve_anchor_file(path)
    record = _record_from(_read(path), path)
    anchor = record.anchor
    if not isinstance(anchor, torch.Tensor) or anchor.dim() != 2:
        shape = tuple(anchor.shape) if isinstance(anchor, torch.Tensor) else type(anchor).__name__
        raise CheckpointError(f"anchor in {path} must have shape [ANCHOR_LEN, width], got {shape}")
    length, width = anchor.shape
    if expected_width is not None and width != expected_width:
        raise CheckpointError(
            f"anchor in {path} has shape [{length}, {width}], expected "
            f"[{expected_len if expected_len is not None else length}, {expected_width}]: "
            f"its width {width} does not match the CLIP text width {expected_width} (was it trained with another "
            "backbone?)"
        )
    if expected_len is not None and length != expected_len:
        raise CheckpointError(
            f"anchor in {path} has shape [{length}, {width}], expected [{expected_len}, {width}]: "
            f"it holds {length} anchor token(s) but {ANCHOR_LEN_KEY} is {expected_len}"
        )
    anchor = anchor.detach().to(dtype=torch.float32).clone()
    if not bool(torch.isfinite(anchor).all()):
        raise CheckpointError(f"anchor in {path} contains NaN or infinite values")
    record.anchor = anchor
    return record
