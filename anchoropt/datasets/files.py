"""Finding a dataset's folder and checking its files, with errors that say what is missing and where."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any, Iterable, Sequence

from anchoropt.datasets.catalog import DatasetFacts, Entry
from anchoropt.errors import DataError

# Directories holding at most this many of the wanted files are checked with one stat per file;
# larger groups with one listing (ImageNet's val folders: 50 files each; Food101's: 1000).
_STAT_LIMIT = 16
_EXAMPLES = 5


def prepare_hint(root: str, name: str) -> str:
    return f"run `anchoropt-prepare-data --root {root} --datasets {name}` to see what is missing and where it goes"


def data_root(cfg: Any) -> str:
    """``DATASET.ROOT`` as an absolute path; it must be an existing, non-empty folder."""
    raw = cfg.DATASET.ROOT
    if not raw:
        raise DataError("DATASET.ROOT is not set: pass --root DATA, the folder that holds the datasets")
    root = os.path.abspath(os.path.expanduser(raw))
    if not os.path.isdir(root):
        raise DataError(
            f"DATASET.ROOT {root} does not exist or is not a folder (expected the folder that holds "
            f"the datasets, e.g. {root}/oxford_pets/)"
        )
    if not any(not n.startswith(".") for n in os.listdir(root)):
        raise DataError(f"DATASET.ROOT {root} is empty (expected dataset folders such as oxford_pets/, imagenet/)")
    return root


def dataset_folder(cfg: Any, facts: DatasetFacts) -> str:
    """The dataset's folder under ``DATASET.ROOT``; a ``DataError`` naming both when it is missing."""
    root = data_root(cfg)
    path = os.path.join(root, facts.folder)
    if not os.path.isdir(path):
        raise DataError(
            f"{facts.name}: dataset folder not found: {path} (expected a folder named "
            f"'{facts.folder}' under DATASET.ROOT={root}); {prepare_hint(root, facts.name)}"
        )
    return path


def entry_path(dataset_dir: str, entry: Entry) -> str | None:
    """Where ``entry`` is found (its path or an accepted alternative), or None."""
    for rel in (entry.path, *entry.alternatives):
        path = os.path.join(dataset_dir, rel)
        if os.path.isdir(path) if entry.kind == "dir" else os.path.isfile(path):
            return path
    return None


def missing_entries(dataset_dir: str, entries: Iterable[Entry]) -> list[Entry]:
    return [e for e in entries if entry_path(dataset_dir, e) is None]


def require_entries(facts: DatasetFacts, dataset_dir: str, entries: Sequence[Entry], purpose: str = "") -> None:
    """Raise one ``DataError`` listing every entry of ``entries`` that is missing."""
    missing = missing_entries(dataset_dir, entries)
    if missing:
        listed = ", ".join(
            f"{os.path.join(dataset_dir, e.path)}{'/' if e.kind == 'dir' else ''} ({e.what})" for e in missing
        )
        root = os.path.dirname(dataset_dir)
        raise DataError(
            f"{facts.name}: missing {listed}{' ' + purpose if purpose else ''}; {prepare_hint(root, facts.name)}"
        )


def find_missing(paths: Iterable[str]) -> list[str]:
    """The paths of ``paths`` that do not exist, in input order.

    Paths are grouped by folder so that a large split costs one listing per
    class folder, not one ``stat`` per image.
    """
    paths = list(paths)
    by_dir: dict[str, set[str]] = defaultdict(set)
    for path in paths:
        folder, name = os.path.split(path)
        by_dir[folder].add(name)
    absent: set[str] = set()
    for folder, names in by_dir.items():
        if len(names) <= _STAT_LIMIT:
            absent.update(os.path.join(folder, n) for n in names if not os.path.exists(os.path.join(folder, n)))
            continue
        try:
            present = set(os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):
            present = set()
        absent.update(os.path.join(folder, n) for n in names - present)
    seen: set[str] = set()
    out = []
    for path in paths:
        if path in absent and path not in seen:
            seen.add(path)
            out.append(path)
    return out


def check_images_exist(facts: DatasetFacts, items: Iterable[Any], image_dir: str, source: str, root: str) -> None:
    """Raise one ``DataError`` naming how many images of ``items`` are missing and the first few."""
    items = list(items)
    missing = find_missing(item.impath for item in items)
    if not missing:
        return
    shown = ", ".join(_short(p, image_dir) for p in missing[:_EXAMPLES])
    more = f" (and {len(missing) - _EXAMPLES} more)" if len(missing) > _EXAMPLES else ""
    raise DataError(
        f"{facts.name}: {len(missing)} of {len(items)} images listed in {source} are missing under "
        f"{image_dir}: {shown}{more}; expected the images extracted there as CoOp's DATASETS.md "
        f"describes ({prepare_hint(root, facts.name)})"
    )


def _short(path: str, base: str) -> str:
    prefix = base.rstrip(os.sep) + os.sep
    return path[len(prefix) :] if path.startswith(prefix) else path


def read_lines(path: str, what: str) -> list[str]:
    """Non-empty, stripped lines of a text file; a ``DataError`` naming it when it cannot be read."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"Cannot read {what} {path}: {e}") from None


def list_subfolders(path: str, what: str) -> list[str]:
    """Sorted names of the non-hidden sub-folders of ``path``."""
    try:
        with os.scandir(path) as it:
            return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}") from None


def list_images(folder: str) -> list[str]:
    """Sorted names of the non-hidden files in ``folder``.

    Sorted (CoOp keeps the file system's order, which differs between
    machines) so a seed selects the same images everywhere.
    """
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if not e.name.startswith(".") and e.is_file())


def read_mat(path: str, key: str, what: str):
    """One variable of a MATLAB file; a ``DataError`` naming the file when it is unreadable."""
    from scipy.io import loadmat

    try:
        return loadmat(path)[key]
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}") from None
    except KeyError:
        raise DataError(f"{path}: no variable {key!r} (expected the {what})") from None
    except Exception as e:  # scipy raises several types for corrupt files
        raise DataError(f"Cannot read {what} {path}: {type(e).__name__}: {e}") from None
