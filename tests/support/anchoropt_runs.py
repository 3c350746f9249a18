"""Tiny AnchorOPT runs through ``train.py``: a generated dataset, descriptions, the tiny CLIP, fast settings.

    env = make_tiny_env(tmp_dir, clip_file)            # OxfordPets, 6 classes (3 base, 3 new)
    run_train(env.args("AnchorOPT_StageI", out_dir, "OPTIM.MAX_EPOCH", "2"))
    trainer = build_trainer_from_args(env.args(...))     # the same config, without running it

`record_method` wraps a method of a class (restored by the monkeypatch) to see what a run did:
steps taken, losses, calls of the anchor branch, ...
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.support.data_layouts import GeneratedDataset, base_new_classnames, write_dataset

SENTENCES_PER_CLASS = 4


def description_sentences(classname: str, count: int = SENTENCES_PER_CLASS) -> list[str]:
    name = classname.replace("_", " ")
    shapes = ("round", "long", "small", "spotted", "striped", "fluffy")
    return [f"A photo of a {name}, which looks {shapes[i % len(shapes)]} and has feature {i}." for i in range(count)]


def write_descriptions(
    path: Path, classnames: list[str], count: int = SENTENCES_PER_CLASS, short: dict[str, int] | None = None
) -> Path:
    """CuPL-format JSON with `count` sentences per class (`short`: class -> fewer sentences)."""
    short = short or {}
    content = {
        name.replace("_", " ").title(): description_sentences(name, short.get(name, count)) for name in classnames
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=1))
    return path


@dataclass
class TinyEnv:
    root: Path
    dataset: GeneratedDataset
    clip_file: Path
    descriptions: Path
    num_shots: int = 4
    batch_size: int = 4
    stage1: Path | None = None  # a Stage I output directory, once a test module has made one

    @property
    def base_classes(self) -> list[str]:
        return base_new_classnames(self.dataset)[0]

    @property
    def new_classes(self) -> list[str]:
        return base_new_classnames(self.dataset)[1]

    def args(
        self,
        trainer: str,
        output_dir: Path | str,
        *opts: str,
        subsample: str = "base",
        flags: tuple[str, ...] = (),
        dataset: GeneratedDataset | None = None,
    ) -> list[str]:
        """train.py arguments for a fast run of `trainer` (adam at 0.01: the random tiny CLIP barely moves with SGD)."""
        data = dataset or self.dataset
        return [
            "--root",
            str(self.root / "data"),
            "--seed",
            "1",
            "--trainer",
            trainer,
            "--dataset-config-file",
            data.config_file,
            "--output-dir",
            str(output_dir),
            *flags,
            "MODEL.BACKBONE.PATH",
            str(self.clip_file),
            "INPUT.SIZE",
            "(32, 32)",
            "DATASET.NUM_SHOTS",
            str(self.num_shots),
            "DATASET.SUBSAMPLE_CLASSES",
            subsample,
            "DATALOADER.NUM_WORKERS",
            "0",
            "DATALOADER.TRAIN_X.BATCH_SIZE",
            str(self.batch_size),
            "DATALOADER.TEST.BATCH_SIZE",
            "4",
            "OPTIM.NAME",
            "adam",
            "OPTIM.LR",
            "0.01",
            "TRAINER.COOP.PREC",
            "fp32",
            "TRAINER.ANCHOROPT.DESCRIPTIONS",
            str(self.descriptions),
            "TRAINER.ANCHOROPT.MAX_TEMPLATE_LENGTH",
            "3",
            *opts,
        ]


def make_tiny_env(
    root: Path, clip_file: Path, dataset: str = "OxfordPets", n_classes: int = 6, n_per_class: int = 10
) -> TinyEnv:
    info = write_dataset(dataset, root / "data", n_classes=n_classes, n_per_class=n_per_class)
    descriptions = write_descriptions(root / "descriptions.json", info.classnames)
    return TinyEnv(root=root, dataset=info, clip_file=clip_file, descriptions=descriptions)


def make_env_with_anchor(root: Path, clip_file: Path) -> TinyEnv:
    """A tiny environment whose Stage I (one epoch, no test) has already learned the anchor in ``env.stage1``."""
    env = make_tiny_env(root, clip_file)
    env.stage1 = env.root / "stage1"
    run_train(env.args("AnchorOPT_StageI", env.stage1, "OPTIM.MAX_EPOCH", "1", "TEST.NO_TEST", "True"))
    return env


def run_train(args: list[str]) -> int:
    from anchoropt.cli.train import main

    return main(args)


def build_trainer_from_args(args: list[str]):
    """The trainer train.py would build for `args` (nothing is run; no log file)."""
    from anchoropt.cli.train import _check_registered, build_parser, setup_cfg
    from anchoropt.engine import build_trainer, set_random_seed
    from anchoropt.plugins import load_plugins

    parsed = build_parser().parse_args(args)
    load_plugins(parsed.plugin)
    cfg = setup_cfg(parsed)
    _check_registered(cfg)
    set_random_seed(cfg.SEED)
    return build_trainer(cfg)


def read_results(output_dir: Path | str, split: str = "test") -> dict:
    name = "results.json" if split == "test" else f"results_{split}.json"
    return json.loads((Path(output_dir) / name).read_text())


def record_method(
    monkeypatch: pytest.MonkeyPatch, owner: type, name: str, record: Callable[..., Any] | None = None
) -> list:
    """Wrap ``owner.name``; each call appends ``record(self, result, *args)`` (default: the result) to the list."""
    original = getattr(owner, name)
    calls: list = []

    @functools.wraps(original)
    def wrapper(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        calls.append(record(self, result, *args) if record else result)
        return result

    monkeypatch.setattr(owner, name, wrapper)
    return calls
