"""Anchor provenance: what a Stage I anchor was learned from, and whether a command asks for the same.

The Stage I trainer stores in its anchor file (``settings["provenance"]``) the
run fingerprint, the descriptions file it read with that file's sha256, and
(beside it, as before) the class names. Reusing a Stage I directory compares
these with what the command would use; an anchor without provenance (a
released official anchor, or one from before provenance) is accepted with a
note.
"""

from __future__ import annotations

import hashlib
import os.path as osp
from typing import Any, Mapping, Optional

PROVENANCE_KEY = "provenance"


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def requested_descriptions(cfg: Mapping) -> str:
    """The descriptions file a Stage I run of ``cfg`` reads (``TRAINER.ANCHOROPT.DESCRIPTIONS`` or the dataset's)."""
    given = str(cfg["TRAINER"]["ANCHOROPT"]["DESCRIPTIONS"]) if "ANCHOROPT" in cfg["TRAINER"] else ""
    if given:
        return given
    from anchoropt.method.descriptions import default_descriptions_path

    return str(default_descriptions_path(cfg["DATASET"]["NAME"]))


def anchor_provenance(fingerprint: str, descriptions: Optional[str]) -> dict[str, Any]:
    """The provenance a Stage I run writes into its anchor file (``descriptions``: the file read, or None)."""
    return {
        "fingerprint": fingerprint,
        "descriptions": descriptions or "",
        "descriptions_sha256": file_sha256(descriptions) if descriptions else "",
    }


def anchor_note(path: str) -> Optional[str]:
    """A one-line note when the anchor at ``path`` records no provenance (a released official anchor)."""
    from anchoropt.errors import CheckpointError
    from anchoropt.method.anchor_checkpoint import load_anchor

    try:
        record = load_anchor(path)
    except CheckpointError:
        return None  # the trainer reports an unreadable anchor itself
    if record.provenance:
        return None
    return f"the anchor in {record.path} records no provenance (a released anchor?): used as it is"


def anchor_provenance_differences(
    anchor_dir: str, cfg: Mapping, identity: Mapping[str, Any], compare_fingerprint: bool
) -> tuple[list[tuple[str, Any, Any]], list[str]]:
    """Differences between the anchor in ``anchor_dir`` and the Stage I run ``cfg`` asks for, and notes.

    ``compare_fingerprint``: also compare the fingerprint stored in the anchor (when the directory records no
    identity of its own, e.g. an anchor file copied there).
    """
    from anchoropt.errors import CheckpointError
    from anchoropt.method.anchor_checkpoint import load_anchor

    try:
        record = load_anchor(anchor_dir)
    except CheckpointError as e:
        return [("anchor file", "unreadable", str(e))], []
    provenance = record.provenance
    if not provenance:
        return [], [anchor_note(str(record.path)) or ""]
    diffs: list[tuple[str, Any, Any]] = []
    if compare_fingerprint and provenance.get("fingerprint") and provenance["fingerprint"] != identity["fingerprint"]:
        diffs.append(("Stage I fingerprint", provenance["fingerprint"], identity["fingerprint"]))
    old_sha = provenance.get("descriptions_sha256")
    uses_descriptions = float(cfg["TRAINER"]["ANCHOROPT"]["ANCHOR_MSE_WEIGHT"]) > 0
    if old_sha and uses_descriptions:
        path = requested_descriptions(cfg)
        new_sha = file_sha256(path) if osp.isfile(path) else "(no such file)"
        if new_sha != old_sha:
            diffs.append((f"descriptions file {path} (sha256)", old_sha[:12], new_sha[:12]))
    return diffs, []


_ANCHOR_IDS: dict[tuple[str, int, int], Optional[str]] = {}


def anchor_identity(path: str) -> Optional[str]:
    """16 hex digits naming the anchor at ``path`` (file or Stage I directory): a hash of its provenance, or of
    the file when it has none (released anchors); None when there is no readable anchor there."""
    import json
    import os

    from anchoropt.errors import CheckpointError
    from anchoropt.method.anchor_checkpoint import load_anchor, resolve_anchor_file

    try:
        file = str(resolve_anchor_file(path))
        stat = os.stat(file)
    except (CheckpointError, OSError):
        return None
    key = (os.path.realpath(file), stat.st_size, stat.st_mtime_ns)
    if key not in _ANCHOR_IDS:
        try:
            provenance = load_anchor(file).provenance
        except CheckpointError:
            provenance = None
        if provenance:
            text = json.dumps(provenance, sort_keys=True, default=str)
            _ANCHOR_IDS[key] = hashlib.sha256(text.encode()).hexdigest()[:16]
        else:
            _ANCHOR_IDS[key] = file_sha256(file)[:16]
    return _ANCHOR_IDS[key]
