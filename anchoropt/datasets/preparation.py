"""Checking a data root and fetching CoOp's small hosted files (the work behind ``anchoropt-prepare-data``).

The only network call is ``download_from_google_drive``; tests replace it.
Everything that arrives is verified (format, class count) before it is moved
into place with an atomic rename, so a bad download never overwrites a file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any

from anchoropt.datasets.catalog import CATALOG, DatasetFacts, Entry
from anchoropt.datasets.files import entry_path, find_missing
from anchoropt.datasets.image_check import check_images
from anchoropt.datasets.splits import SPLIT_KEYS, parse_split
from anchoropt.errors import DataError, UserError
from anchoropt.fileio import atomic_write_bytes, umask_mode

_WNID_LINE = re.compile(r"^n\d{8} \S")


class DownloadError(UserError):
    """A download failed or what arrived is not the expected file."""


# --------------------------------------------------------------------------- network boundary


def download_from_google_drive(file_id: str, dest: str) -> None:
    """Download Google Drive file ``file_id`` to ``dest`` with gdown (the only network call here)."""
    try:
        import gdown
    except ImportError:
        raise DownloadError("gdown is not installed (pip install gdown)") from None
    try:
        result = gdown.download(id=file_id, output=dest, quiet=True)
    except Exception as e:  # gdown raises several types (quota pages, HTTP errors, timeouts)
        raise DownloadError(f"Google Drive file {file_id}: {type(e).__name__}: {e}") from None
    if result is None:
        raise DownloadError(f"Google Drive file {file_id}: gdown could not download it")


# --------------------------------------------------------------------------- verification


def verify_content(data: bytes, entry: Entry, facts: DatasetFacts) -> str:
    """Check a file's bytes against what ``entry`` must hold; return a short summary, else raise ``DataError``."""
    head = data.lstrip()[:200].lower()
    if head.startswith(b"<!doctype html") or head.startswith(b"<html"):
        raise DataError(
            "got an HTML page instead of the file (Google Drive may be refusing the download: quota "
            "exceeded or a sign-in page); try again later or fetch it by hand from the link in "
            "CoOp's DATASETS.md"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError("not UTF-8 text") from None
    if entry.verify == "split":
        return _verify_split(text, facts)
    if entry.verify == "classnames":
        return _verify_classnames(text)
    if entry.verify == "cat_to_name":
        return _verify_cat_to_name(text, facts)
    raise ValueError(f"no verification rule {entry.verify!r}")


def _decode_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e})") from None


def _verify_split(text: str, facts: DatasetFacts) -> str:
    split = parse_split(_decode_json(text), "split file")
    names: dict[int, str] = {}
    for key in SPLIT_KEYS:
        for path, label, classname in split[key]:
            if os.path.isabs(path) or ".." in path.split("/"):
                raise DataError(f"split file: {key} path {path!r} is not relative to the image folder")
            if names.setdefault(label, classname) != classname:
                raise DataError(f"split file: label {label} is both {names[label]!r} and {classname!r}")
    if sorted(names) != list(range(facts.num_classes)):
        raise DataError(
            f"split file has {len(names)} classes (labels {min(names)}..{max(names)}), expected "
            f"{facts.num_classes} labelled 0..{facts.num_classes - 1} for {facts.name}"
        )
    return ", ".join(f"{len(split[k])} {k}" for k in SPLIT_KEYS)


def _verify_classnames(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    bad = [line for line in lines if not _WNID_LINE.match(line)]
    if bad:
        raise DataError(f"expected '<wnid> <class name>' lines, got {bad[0][:80]!r}")
    if len(lines) != 1000:
        raise DataError(f"{len(lines)} class names, expected the 1000 ImageNet classes")
    return f"{len(lines)} classes"


def _verify_cat_to_name(text: str, facts: DatasetFacts) -> str:
    obj = _decode_json(text)
    expected = {str(i) for i in range(1, facts.num_classes + 1)}
    if not isinstance(obj, dict) or set(obj) != expected or not all(isinstance(v, str) for v in obj.values()):
        raise DataError(f"expected a JSON object mapping '1'..'{facts.num_classes}' to class names")
    return f"{len(obj)} classes"


# --------------------------------------------------------------------------- installing files


@dataclass
class FileOutcome:
    dataset: str
    path: str
    status: str  # "present", "downloaded", "copied", "failed", "skipped"
    detail: str = ""


def _local_copy(root: str, entry: Entry, facts: DatasetFacts) -> bytes | None:
    """A verified copy of ``entry`` in another dataset folder (the variants share ImageNet's classnames.txt)."""
    if entry.verify != "classnames":
        return None
    for other in CATALOG.values():
        path = os.path.join(root, other.folder, entry.path)
        if other is facts or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        with contextlib.suppress(DataError):
            verify_content(data, entry, facts)
            return data
    return None


def fetch_file(root: str, facts: DatasetFacts, entry: Entry, force: bool = False) -> FileOutcome:
    """Make sure ``entry`` of ``facts`` is in place under ``root``: keep a good file, copy or download one."""
    dataset_dir = os.path.join(root, facts.folder)
    target = os.path.join(dataset_dir, entry.path)
    if os.path.isfile(target) and not force:
        try:
            with open(target, "rb") as f:
                summary = verify_content(f.read(), entry, facts)
            return FileOutcome(facts.name, target, "present", summary)
        except DataError as e:
            if entry.verify == "split":
                # A split that does not match CoOp's (e.g. one built for a generated copy) is kept; --force replaces.
                return FileOutcome(facts.name, target, "present", f"kept, but not CoOp's file: {e}")
    os.makedirs(dataset_dir, exist_ok=True)
    local = _local_copy(root, entry, facts)
    if local is not None:
        atomic_write_bytes(target, local)
        return FileOutcome(facts.name, target, "copied", "from another ImageNet folder")
    fd, tmp = tempfile.mkstemp(dir=dataset_dir, prefix=f".{os.path.basename(target)}.", suffix=".download")
    os.close(fd)
    try:
        download_from_google_drive(entry.gdrive_id, tmp)
        with open(tmp, "rb") as f:
            data = f.read()
        summary = verify_content(data, entry, facts)
        os.chmod(tmp, umask_mode())  # mkstemp made it 0600; the data root is often shared
        os.replace(tmp, target)
        return FileOutcome(facts.name, target, "downloaded", summary)
    except (DownloadError, DataError) as e:
        return FileOutcome(facts.name, target, "failed", f"{e} (nothing was written)")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def fetch_hosted_files(root: str, names: list[str], explicit: bool, force: bool = False) -> list[FileOutcome]:
    """Fetch the split and class-name files of ``names``; without ``explicit`` only for folders that exist."""
    out = []
    for name in names:
        facts = CATALOG[name]
        for entry in facts.downloadable:
            if not explicit and not os.path.isdir(os.path.join(root, facts.folder)):
                out.append(
                    FileOutcome(
                        name,
                        os.path.join(root, facts.folder, entry.path),
                        "skipped",
                        "dataset folder not found (name it with --datasets to create it)",
                    )
                )
                continue
            out.append(fetch_file(root, facts, entry, force=force))
    return out


# --------------------------------------------------------------------------- checking a data root


@dataclass
class DatasetReport:
    name: str
    folder: str
    status: str = "ready"  # "ready", "not found", "incomplete", "error"
    present: list[str] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (path, what to put there / where from)
    notes: list[str] = field(default_factory=list)
    classes: str = ""
    sizes: str = ""

    @property
    def ready(self) -> bool:
        return self.status == "ready"


def _where_from(facts: DatasetFacts, entry: Entry) -> str:
    if entry.gdrive_id:
        return f"{entry.what}; fetched by --download-splits"
    if entry.kind == "dir":
        return f"{entry.what}; from {facts.source}"
    return entry.what


def check_dataset(root: str, facts: DatasetFacts, load: bool = True) -> DatasetReport:
    """What of ``facts`` is present under ``root``, what is missing and where it goes; optionally a trial load."""
    dataset_dir = os.path.join(root, facts.folder)
    report = DatasetReport(facts.name, dataset_dir)
    if not os.path.isdir(dataset_dir):
        report.status = "not found"
        report.missing.append((dataset_dir + "/", f"the dataset folder; images from {facts.source}"))
        return report
    for entry in facts.required:
        found = entry_path(dataset_dir, entry)
        if found:
            report.present.append(os.path.relpath(found, dataset_dir) + ("/" if entry.kind == "dir" else ""))
        else:
            report.missing.append((os.path.join(dataset_dir, entry.path), _where_from(facts, entry)))
    split_missing = False
    if facts.split is not None:
        split_path = os.path.join(dataset_dir, facts.split.path)
        if os.path.isfile(split_path):
            report.present.append(facts.split.path)
            _check_split(report, facts, split_path, dataset_dir)
        else:
            split_missing = True
            report.missing.append((split_path, _where_from(facts, facts.split)))
            sources = [e for e in facts.split_sources if entry_path(dataset_dir, e) is None]
            if not sources:
                report.notes.append(
                    "without the split file training stops with an error; with "
                    "DATASET.RANDOM_SPLIT_IF_MISSING True a new random split is built instead (not "
                    "comparable with published results)"
                )
            for entry in sources:
                report.missing.append(
                    (
                        os.path.join(dataset_dir, entry.path),
                        f"{_where_from(facts, entry)} (needed only without the split file)",
                    )
                )
    if report.missing and report.status == "ready":
        report.status = "incomplete"
    elif report.status == "ready" and load and not split_missing:
        _trial_load(report, root, facts)
    return report


def _check_split(report: DatasetReport, facts: DatasetFacts, split_path: str, dataset_dir: str) -> None:
    try:
        with open(split_path, "rb") as f:
            split = parse_split(_decode_json(f.read().decode("utf-8", "replace")), split_path)
    except DataError as e:
        report.status = "error"
        report.notes.append(f"{e}; replace it with --download-splits --force")
        return
    labels = {row[1] for key in SPLIT_KEYS for row in split[key]}
    if len(labels) != facts.num_classes:
        report.notes.append(f"the split file has {len(labels)} classes; CoOp's has {facts.num_classes}")
    image_dir = os.path.join(dataset_dir, facts.image_dir)
    paths = [os.path.join(image_dir, row[0]) for key in SPLIT_KEYS for row in split[key]]
    missing = find_missing(paths)
    if missing:
        report.status = "error"
        report.notes.append(
            f"{len(missing)} of {len(paths)} images listed in {facts.split.path} are missing "
            f"under {image_dir}, e.g. {', '.join(os.path.relpath(m, image_dir) for m in missing[:3])}"
        )


def _trial_load(report: DatasetReport, root: str, facts: DatasetFacts) -> None:
    """Build the dataset as training would (all classes, no few-shot sampling) and record its size or error."""
    import anchoropt.datasets  # noqa: F401  (registers the classes)
    from anchoropt.config import build_config
    from anchoropt.engine import DATASET_REGISTRY

    cfg = build_config(
        opts=[
            "DATASET.ROOT",
            root,
            "DATASET.NAME",
            facts.name,
            "DATASET.NUM_SHOTS",
            "-1",
            "DATASET.SUBSAMPLE_CLASSES",
            "all",
            "SEED",
            "1",
        ]
    )
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = DATASET_REGISTRY.get(facts.name)(cfg)
    except DataError as e:
        report.status = "error"
        report.notes.append(str(e))
        return
    splits = [("train", dataset.train_x), ("val", dataset.val), ("test", dataset.test)]
    try:
        check_images([(name, items) for name, items in splits if items], facts.name)
    except DataError as e:
        report.status = "error"
        report.notes.append(str(e))
    report.classes = f"{dataset.num_classes}" + (
        "" if dataset.num_classes == facts.num_classes else f" (CoOp: {facts.num_classes})"
    )
    if facts.test_only:
        report.sizes = f"test {len(dataset.test)}"
    else:
        val = "= test" if dataset.val is dataset.test else str(len(dataset.val))
        report.sizes = f"train {len(dataset.train_x)}, val {val}, test {len(dataset.test)}"
