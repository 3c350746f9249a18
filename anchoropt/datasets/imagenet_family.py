"""Helpers shared by ImageNet and its test-only variants: ``classnames.txt`` and folder-per-class listings."""

from __future__ import annotations

import os
from typing import Any

from anchoropt.datasets.catalog import DatasetFacts
from anchoropt.datasets.files import (
    dataset_folder,
    entry_path,
    list_images,
    list_subfolders,
    read_lines,
    require_entries,
)
from anchoropt.datasets.splits import paused_gc
from anchoropt.datasets.subsample import warn_subsample_ignored
from anchoropt.engine import DatasetBase, Datum
from anchoropt.errors import DataError


def read_classnames(path: str) -> dict[str, str]:
    """``{wnid: class name}`` in file order from lines ``<wnid> <class name>``."""
    classnames: dict[str, str] = {}
    for n, line in enumerate(read_lines(path, "ImageNet class-name file")):
        folder, _, name = line.partition(" ")
        if not name.strip():
            raise DataError(f"{path}, line {n + 1}: expected '<wnid> <class name>', got {line!r}")
        classnames[folder] = name.strip()
    return classnames


def names_for(folders: list[str], classnames: dict[str, str], classnames_path: str, where: str) -> list[str]:
    """The class name of each folder; one ``DataError`` listing every folder missing from ``classnames.txt``."""
    unknown = [f for f in folders if f not in classnames]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else "")
        raise DataError(
            f"{where}: {len(unknown)} class folder(s) are not listed in {classnames_path}: {shown} "
            f"(expected folders named by the wnids of classnames.txt)"
        )
    return [classnames[f] for f in folders]


def items_from_folders(base: str, folders: list[str], names: list[str], files: list[list[str]] | None = None) -> list:
    """``Datum`` for ``base/<folder>/<file>``, label = the folder's position; ``files`` default to a listing."""
    items: list = []
    with paused_gc():
        for label, (folder, classname) in enumerate(zip(folders, names)):
            folder_path = os.path.join(base, folder)
            prefix = folder_path + os.sep  # plain concatenation: os.path.join costs seconds over 1.28 M names
            in_folder = files[label] if files is not None else list_images(folder_path)
            items += [Datum(impath=prefix + name, label=label, classname=classname) for name in in_folder]
    return items


class ImageNetVariant(DatasetBase):
    """A test-only ImageNet variant: every image is in ``test`` (and ``train_x``, as in CoOp), all classes, no shots.

    Subclasses set ``facts`` and choose the class folders with ``class_folders``.
    """

    facts: DatasetFacts

    def __init__(self, cfg: Any) -> None:
        facts = self.facts
        warn_subsample_ignored(cfg, facts.name, " (as in CoOp)")
        self.dataset_dir = dataset_folder(cfg, facts)
        require_entries(facts, self.dataset_dir, facts.required)
        self.image_dir = self._find_image_dir()
        self.classnames_path = os.path.join(self.dataset_dir, "classnames.txt")
        classnames = read_classnames(self.classnames_path)
        folders, names = self.class_folders(classnames)
        data = items_from_folders(self.image_dir, folders, names)
        if not data:
            raise DataError(f"{facts.name}: no images found under {self.image_dir}")
        super().__init__(train_x=data, test=data)

    def _find_image_dir(self) -> str:
        entry = next(e for e in self.facts.required if e.path == self.facts.image_dir)
        return entry_path(self.dataset_dir, entry) or os.path.join(self.dataset_dir, self.facts.image_dir)

    def class_folders(self, classnames: dict[str, str]) -> tuple[list[str], list[str]]:
        """Folders in label order and their class names: the sorted wnid folders present (CoOp's rule)."""
        folders = list_subfolders(self.image_dir, f"{self.facts.name} image folder")
        return folders, names_for(folders, classnames, self.classnames_path, self.image_dir)
