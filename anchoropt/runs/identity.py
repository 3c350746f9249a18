"""Run identity: the fingerprint of a run's effective config, and what an output directory already holds.

A run's *fingerprint* is a sha256 over the config keys that can change its
result. Two kinds of keys are left out, each listed once here:

- ``NON_RESULT_KEYS``: where files are read and written, how many workers load
  them, how often progress is printed or checkpoints are kept, which config
  files the values came from (their content is in the config itself);
- keys of other trainers' config nodes (``TRAINER_KEYS``): the protocol scripts
  hand one set of extra options to every trainer (and the non-``OPTIM`` ones to
  Stage I), so ``TRAINER.MAPLE.PROMPT_DEPTH`` must not make a CoOp run, or the
  Stage I anchor a MaPLe run shares, look different.

An evaluation of a trained model (``--eval-only --model-dir``) also depends
on that model: its fingerprint includes the training run's fingerprint and
the epoch loaded.

``train.py`` writes the identity (fingerprint, the config keys it covers, the
model evaluated) to ``<output>/run_identity.json`` before it starts; results
files and checkpoints carry the fingerprint too. `run_status` compares a
command's config with what a directory holds: *finished*, *interrupted* (a
resume point, no results yet), *absent*, or a *conflict* naming the keys that
differ.
"""

from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from anchoropt.errors import UserError

IDENTITY_FILE = "run_identity.json"
IDENTITY_SCHEMA = "anchoropt.run-identity/1"
RESULTS_FILE = "results.json"
ANCHOR_FILE = "anchor.pth"
CHECKPOINT_POINTER = "checkpoint"
ANCHOR_PATH_KEY = "TRAINER.ANCHOROPT.ANCHOR_PATH"
#: Suffix of a run directory moved aside by ``--overwrite`` / ``OVERWRITE=1`` (``<dir>.replaced-<n>``).
REPLACED_SUFFIX = ".replaced-"
REPLACED_DIR = re.compile(r"\.replaced-\d+$")

#: Config keys that cannot change a result. The one list (README: "Run identity").
NON_RESULT_KEYS: tuple[str, ...] = (
    "VERSION",
    "OUTPUT_DIR",  # where the run is written
    "RESUME",  # where a resume point is read (--resume)
    "DATASET.ROOT",  # where the datasets are (their content is fixed by DATASET.NAME and the split files)
    "DATALOADER.NUM_WORKERS",
    "DATALOADER.TEST.BATCH_SIZE",  # evaluation batches: same predictions, other grouping
    "TRAIN.PRINT_FREQ",
    "TRAIN.CHECKPOINT_FREQ",  # which epochs stay on disk (every epoch leaves a resume point anyway)
    "TEST.PER_CLASS_RESULT",  # what is printed
    "TEST.COMPUTE_CMAT",
    "VERBOSE",
    "USE_CUDA",  # the device; the precision actually used is recorded in results.json
    "RUN.CONFIG_FILE",  # where the values came from; the values themselves are covered
    "RUN.DATASET_CONFIG_FILE",
    "RUN.PROTOCOL",  # which table the result goes to
)

_STAGE1_ANCHOROPT = tuple(
    f"TRAINER.ANCHOROPT.{key}"
    for key in ("ANCHOR_LEN", "ANCHOR_MSE_WEIGHT", "ANCHOR_CE_WEIGHT", "MAX_TEMPLATE_LENGTH", "DESCRIPTIONS")
)
_DEPT_HEAD = ("TRAINER.LINEAR_PROBE.", "TRAINER.FILM.")
#: The ``TRAINER.*`` keys (exact keys or ``NODE.`` prefixes) each trainer's result depends on. A trainer not
#: listed here (a plugin's) keeps every ``TRAINER.*`` key, which is never wrong, only stricter.
TRAINER_KEYS: dict[str, tuple[str, ...]] = {
    "CoOp": ("TRAINER.COOP.",),
    "CoCoOp": ("TRAINER.COCOOP.",),
    "MaPLe": ("TRAINER.MAPLE.",),
    "DePT": ("TRAINER.COOP.", *_DEPT_HEAD),
    "ZeroshotCLIP": ("TRAINER.COOP.",),
    "ZeroshotCLIP2": ("TRAINER.COOP.",),
    "AnchorOPT_StageI": ("TRAINER.COOP.PREC", *_STAGE1_ANCHOROPT),
    "CoOp_Pretrain_Anchor": ("TRAINER.COOP.PREC", *_STAGE1_ANCHOROPT),
    "CoOp_AnchorOPT": ("TRAINER.COOP.PREC", "TRAINER.ANCHOROPT."),
    "CoCoOp_AnchorOPT": ("TRAINER.COCOOP.PREC", "TRAINER.ANCHOROPT."),
    "MaPLe_AnchorOPT": ("TRAINER.MAPLE.PROMPT_DEPTH", "TRAINER.MAPLE.PREC", "TRAINER.ANCHOROPT."),
    "DePT_AnchorOPT": ("TRAINER.COOP.PREC", "TRAINER.ANCHOROPT.", *_DEPT_HEAD),
}

_MISSING = object()


class RunConflict(UserError):
    """An output directory holds a run whose settings differ from the command's."""


# ---- the fingerprint ---------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def flat_config(cfg: Mapping) -> dict[str, Any]:
    """``{"OPTIM.MAX_EPOCH": 50, ...}``: every leaf of a (yacs) config, tuples as lists."""
    out: dict[str, Any] = {}

    def walk(node: Mapping, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = _plain(value)

    walk(cfg, "")
    return out


def is_result_key(key: str, trainer: str) -> bool:
    """Whether ``key`` can change the result of a run of ``trainer``."""
    if key in NON_RESULT_KEYS:
        return False
    kept = TRAINER_KEYS.get(trainer)
    if kept is not None and key.startswith("TRAINER.") and key != "TRAINER.NAME":
        return key.startswith(kept)
    return True


def result_config(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a flat config that the fingerprint covers."""
    trainer = str(flat.get("TRAINER.NAME", ""))
    return {key: flat[key] for key in sorted(flat) if is_result_key(key, trainer)}


def fingerprint_of(
    config: Mapping[str, Any], model: Optional[Mapping[str, Any]] = None, anchor: Optional[str] = None
) -> str:
    """16 hex digits of the sha256 of the result keys (and of the model evaluated and the anchor used, if any)."""
    payload: dict[str, Any] = {"config": dict(config)}
    if model:
        payload["model"] = {k: model.get(k) for k in ("fingerprint", "load_epoch")}
    if anchor:
        payload["anchor"] = anchor
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_identity(model_dir: str, load_epoch: Optional[int] = None) -> dict[str, Any]:
    """What an evaluation loads: the training run in ``model_dir`` (its fingerprint when recorded) and the epoch."""
    recorded = recorded_identity(model_dir) if model_dir and osp.isdir(model_dir) else None
    return {
        "dir": osp.abspath(model_dir) if model_dir else "",
        "fingerprint": recorded["fingerprint"] if recorded else None,
        "trainer": recorded.get("trainer") if recorded else None,
        "config": recorded.get("config") if recorded else None,
        "config_files": recorded.get("config_files", "") if recorded else "",
        "dataset_config_file": recorded.get("dataset_config_file", "") if recorded else "",
        "load_epoch": load_epoch,
    }


def run_identity(cfg: Mapping, model: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The identity of the run ``cfg`` describes (``model``: what an evaluation loads, see `model_identity`)."""
    flat = flat_config(cfg)
    config = result_config(flat)
    anchor = None
    if config.get(ANCHOR_PATH_KEY):  # a Stage II run: the anchor it starts from is part of what it is
        from anchoropt.runs.provenance import anchor_identity

        anchor = anchor_identity(str(config[ANCHOR_PATH_KEY]))
    return {
        "schema": IDENTITY_SCHEMA,
        "fingerprint": fingerprint_of(config, model, anchor),
        "trainer": str(flat.get("TRAINER.NAME", "")),
        "config": config,
        "model": dict(model) if model else None,
        "anchor": anchor,
        "config_files": str(flat.get("RUN.CONFIG_FILE", "")),
        "dataset_config_file": str(flat.get("RUN.DATASET_CONFIG_FILE", "")),
    }


def write_identity(output_dir: str, identity: Mapping[str, Any]) -> str:
    from anchoropt.fileio import atomic_write_bytes

    path = osp.join(output_dir, IDENTITY_FILE)
    atomic_write_bytes(path, (json.dumps(identity, indent=2, sort_keys=True, default=str) + "\n").encode())
    return path


def recorded_identity(output_dir: str) -> Optional[dict[str, Any]]:
    """The identity ``output_dir`` records: its identity file, else the config in its ``results.json``
    (runs from before fingerprints), else None."""
    path = osp.join(output_dir, IDENTITY_FILE)
    if osp.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                identity = json.load(f)
            if isinstance(identity, dict) and "fingerprint" in identity and isinstance(identity.get("config"), dict):
                return identity
        except (OSError, ValueError):
            pass
    results = osp.join(output_dir, RESULTS_FILE)
    if osp.isfile(results):
        try:
            import yaml

            with open(results, encoding="utf-8") as f:
                record = json.load(f)
            config = yaml.safe_load(record["config"])
        except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
            return None
        if isinstance(config, dict):
            identity = {"fingerprint": record.get("fingerprint"), "trainer": record.get("trainer", "")}
            identity["config"] = result_config(flat_config(config))
            identity["model"] = record.get("model")
            identity["anchor"] = record.get("anchor_identity")
            if not identity["fingerprint"]:
                identity["fingerprint"] = fingerprint_of(identity["config"], identity["model"], identity["anchor"])
            return identity
    return None


# ---- comparing ---------------------------------------------------------------------------------
def show_value(value: Any) -> str:
    if value is _MISSING:
        return "(unset)"
    if isinstance(value, str):
        return value if value else "''"
    return json.dumps(value)


def config_differences(
    old: Mapping[str, Any], new: Mapping[str, Any], defaults: Optional[Mapping[str, Any]] = None
) -> list[tuple[str, Any, Any]]:
    """``[(key, old value, new value)]`` sorted by key; a key only one side has counts as its default there."""
    defaults = defaults or {}
    diffs = []
    for key in sorted(set(old) | set(new)):
        a = old.get(key, defaults.get(key, _MISSING))
        b = new.get(key, defaults.get(key, _MISSING))
        if a != b:
            diffs.append((key, a, b))
    return diffs


def identity_differences(
    old: Mapping[str, Any], new: Mapping[str, Any], defaults: Optional[Mapping[str, Any]] = None
) -> list[tuple[str, Any, Any]]:
    diffs = config_differences(old.get("config") or {}, new.get("config") or {}, defaults)
    old_model, new_model = old.get("model") or {}, new.get("model") or {}
    if old_model.get("fingerprint") and new_model.get("fingerprint"):
        if old_model["fingerprint"] != new_model["fingerprint"]:
            diffs.append(("model run (--model-dir)", old_model["fingerprint"], new_model["fingerprint"]))
    if old_model and new_model and old_model.get("load_epoch") != new_model.get("load_epoch"):
        diffs.append(("--load-epoch", old_model.get("load_epoch"), new_model.get("load_epoch")))
    if old.get("anchor") and new.get("anchor") and old["anchor"] != new["anchor"]:
        diffs.append((f"anchor in {ANCHOR_PATH_KEY}", old["anchor"], new["anchor"]))
    return diffs


def format_differences(diffs: list[tuple[str, Any, Any]]) -> str:
    """``OPTIM.MAX_EPOCH: 100 -> 3, TRAINER.ANCHOROPT.N_CTX: 4 -> 8``."""
    return ", ".join(f"{key}: {show_value(a)} -> {show_value(b)}" for key, a, b in diffs)


# ---- what a directory holds --------------------------------------------------------------------
def run_products(output_dir: str) -> str:
    """``finished`` (a results file or a Stage I anchor), ``interrupted`` (a resume point) or ``absent``."""
    if not osp.isdir(output_dir):
        return "absent"
    if osp.isfile(osp.join(output_dir, RESULTS_FILE)) or osp.isfile(osp.join(output_dir, ANCHOR_FILE)):
        return "finished"
    for entry in os.scandir(output_dir):
        if entry.is_dir() and osp.isfile(osp.join(entry.path, CHECKPOINT_POINTER)):
            return "interrupted"
    return "absent"


@dataclass
class RunStatus:
    """What ``output_dir`` holds compared with a command: ``state`` is one of ``STATES``."""

    output_dir: str
    state: str
    previous: str = "absent"  # finished / interrupted: what the directory holds, whatever the state
    differences: list[tuple[str, Any, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    STATES = ("absent", "finished", "interrupted", "conflict")

    @property
    def conflict(self) -> bool:
        return self.state == "conflict"

    def message(self) -> str:
        """One line: which run is there, the keys that differ, and the ways out."""
        what = "a finished run" if self.previous == "finished" else "an interrupted run"
        return (
            f"{self.output_dir} holds {what} with other settings ({format_differences(self.differences)}); "
            "keep it and choose another output directory (OUTPUT=... for the scripts, --output-dir for train.py), "
            "or move it aside to start afresh with OVERWRITE=1 (train.py: --overwrite)"
        )


def run_status(
    output_dir: str,
    cfg: Mapping,
    model: Optional[Mapping[str, Any]] = None,
    defaults: Optional[Mapping[str, Any]] = None,
) -> RunStatus:
    """``finished`` / ``interrupted`` / ``absent`` / ``conflict`` for the run ``cfg`` describes in ``output_dir``.

    A directory holding only log files or an identity file is *absent* (a run that failed before its first
    checkpoint has nothing to keep). A run with no recorded identity (from before fingerprints) is taken as the
    same run. A Stage I anchor is also compared by its provenance (`anchoropt.runs.provenance`).
    """
    products = run_products(output_dir)
    status = RunStatus(output_dir, products, products)
    if products == "absent":
        return status
    identity = run_identity(cfg, model)
    recorded = recorded_identity(output_dir)
    if recorded is not None and recorded.get("fingerprint") != identity["fingerprint"]:
        status.differences = identity_differences(recorded, identity, defaults)
    if osp.isfile(osp.join(output_dir, ANCHOR_FILE)):
        from anchoropt.runs.provenance import anchor_provenance_differences

        diffs, notes = anchor_provenance_differences(output_dir, cfg, identity, recorded is None)
        status.differences += diffs
        status.notes += notes
    if status.differences:
        status.state = "conflict"
    return status


def check_run(
    output_dir: str,
    cfg: Mapping,
    model: Optional[Mapping[str, Any]] = None,
    defaults: Optional[Mapping[str, Any]] = None,
) -> RunStatus:
    """`run_status`, raising `RunConflict` (its one-line message) on a conflict."""
    status = run_status(output_dir, cfg, model, defaults)
    if status.conflict:
        raise RunConflict(status.message())
    return status


def move_aside(output_dir: str) -> str:
    """Rename ``output_dir`` to the first free ``<output_dir>.replaced-<n>``; nothing is deleted."""
    base = osp.normpath(output_dir)
    n = 1
    while osp.exists(f"{base}{REPLACED_SUFFIX}{n}"):
        n += 1
    target = f"{base}{REPLACED_SUFFIX}{n}"
    os.rename(base, target)
    return target


def is_replaced(path: str) -> bool:
    """Whether ``path`` lies in a run directory moved aside by an overwrite."""
    return any(REPLACED_DIR.search(part) for part in osp.normpath(path).split(os.sep))
