"""The toy world: a pretrained tiny CLIP on generated shapes, where zero-shot transfer and prompt learning work.

Behaviour tests run the unchanged protocol scripts on a small copy of the world built once per session from the
committed weights. Thresholds were fixed from chance levels before any number was seen: each is far enough
above chance that a wrong read-out position, prompt layout or scoring rule fails it.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import anchoropt.datasets  # noqa: F401  (registers the datasets, as train.py does)
from anchoropt.cli.results import main as results_main
from anchoropt.engine import DATASET_REGISTRY
from anchoropt.toyworld import grammar, spec
from anchoropt.toyworld import world as tw
from anchoropt.toyworld.pretrain import Recipe, used_token_ids
from tests.support.toyworld_runs import (
    IMAGES_PER_CLASS,
    SEED,
    STAGE1_EPOCHS,
    accuracy,
    chance,
    run,
    run_dir,
    world_dataset,
)


@pytest.fixture(scope="session")
def base2new_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("toyworld_base2new")


def _base2new(world: tw.World, output: Path, trainer: str) -> Path:
    for script in ("base2new/train.sh", "base2new/test.sh"):
        run(script, ["toy_net", str(SEED)], world, trainer, output)
    return output


# One fixture per trainer, sharing one output folder: a test runs only the trainers it reads.
@pytest.fixture(scope="session")
def zero_shot_runs(toy_world: tw.World, base2new_output: Path) -> Path:
    return _base2new(toy_world, base2new_output, "ZeroshotCLIP")


@pytest.fixture(scope="session")
def coop_runs(toy_world: tw.World, base2new_output: Path) -> Path:
    return _base2new(toy_world, base2new_output, "CoOp")


@pytest.fixture(scope="session")
def anchoropt_runs(toy_world: tw.World, base2new_output: Path) -> Path:
    """CoOp_AnchorOPT: Stage I (anchor from descriptions), Stage II on the base classes, tests on base and new."""
    return _base2new(toy_world, base2new_output, "CoOp_AnchorOPT")


# ---- the world itself --------------------------------------------------------------------------
def test_class_names_are_words_of_the_grammar_and_descriptions_are_committed() -> None:
    for dataset in spec.WORLD_DATASETS:
        assert len(set(dataset.classes)) == len(dataset.classes)
        for name in dataset.classes:
            pattern, colour, shape = grammar.parse_class_name(name)
            assert grammar.class_name(colour, shape, pattern) == name
    for dataset in spec.BASE2NEW_DATASETS:  # Stage I reads descriptions/<Name>.json: it must match the grammar
        committed = json.loads((Path(tw.__file__).parents[2] / "descriptions" / f"{dataset.name}.json").read_text())
        assert committed == tw.descriptions_for(dataset), f"run `anchoropt-toyworld descriptions` ({dataset.name})"


def test_captions_are_reproducible_and_name_the_scene() -> None:
    scene = grammar.Scene("red", "star", "striped")
    assert grammar.caption(scene, random.Random(3)) == grammar.caption(scene, random.Random(3))
    rng = random.Random(0)
    captions = [grammar.caption(scene, rng) for _ in range(200)]
    assert all("star" in c for c in captions)  # the shape is always named (the colour and pattern usually)
    assert len(set(captions)) > 50  # synonyms and templates vary


def test_committed_weights_are_small_follow_the_recipe_and_load_as_a_clip(toy_world: tw.World) -> None:
    assert tw.COMMITTED_WEIGHTS.stat().st_size <= 5 * 2**20
    blob = torch.load(tw.COMMITTED_WEIGHTS, map_location="cpu", weights_only=True)
    assert Recipe.from_json(blob["recipe"]) == Recipe()  # else the world would pretrain on first use
    assert blob["token_ids"].tolist() == used_token_ids()
    state = torch.load(toy_world.clip_path, map_location="cpu", weights_only=True)
    rows = state["token_embedding.weight"]
    assert rows.shape[0] == 49408 and rows[blob["token_ids"]].abs().sum(1).gt(0).all()
    unused = torch.ones(49408, dtype=torch.bool)
    unused[blob["token_ids"]] = False
    assert rows[unused].abs().sum() == 0


def test_world_is_built_once_and_rebuilt_when_the_recipe_changes(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def fake_pretrain(recipe, log=None):
        calls.append(recipe.version)
        state, _ = tw.load_committed_weights()
        return state

    monkeypatch.setattr(tw, "pretrain", fake_pretrain)
    monkeypatch.setattr(tw.spec, "WORLD_DATASETS", (spec.TARGETS[-1],))  # one small dataset is enough here
    first = tw.build_world(tmp_path, images_per_class=2, log=lambda _: None)
    stamp = first.clip_path.stat().st_mtime_ns
    assert tw.build_world(tmp_path, images_per_class=2, log=lambda _: None).clip_path.stat().st_mtime_ns == stamp
    assert calls == []  # the committed weights matched the recipe
    changed = dataclasses.replace(Recipe(), version="toyworld-test", steps=3)
    other = tw.build_world(tmp_path, images_per_class=2, recipe=changed, log=lambda _: None)
    assert calls == ["toyworld-test"] and other.folder != first.folder and other.clip_path.is_file()


def test_world_datasets_are_registered_and_read_from_coop_layout(toy_world: tw.World) -> None:
    from anchoropt.datasets.toyworld import WORLD_CLASSES

    assert set(WORLD_CLASSES) == {d.name for d in spec.WORLD_DATASETS} <= set(DATASET_REGISTRY.registered_names())
    for dataset in (spec.SOURCE, spec.VARIANTS[0]):
        data = world_dataset(toy_world, dataset, num_shots=4)
        assert data.classnames == list(dataset.classes)
        assert len(data.test) == len(dataset.classes) * spec.split_sizes(IMAGES_PER_CLASS)[2]


def test_missing_world_is_one_clear_error(tmp_path: Path) -> None:
    from anchoropt.config import get_default_config
    from anchoropt.errors import DataError

    (tmp_path / "other").mkdir()
    cfg = get_default_config()
    cfg.DATASET.ROOT, cfg.DATASET.NAME = str(tmp_path), "ToyNet"
    with pytest.raises(DataError, match=r"split_zhou_ToyNet\.json not found.*anchoropt-toyworld build"):
        DATASET_REGISTRY.get("ToyNet")(cfg)


# ---- behaviour through the protocol scripts ----------------------------------------------------
@pytest.mark.slow  # end to end through the protocol scripts
def test_zero_shot_clip_scores_base_and_novel_at_least_three_times_chance(zero_shot_runs: Path) -> None:
    for half, kind in (("base", "train_base"), ("new", "test_new")):
        acc = accuracy(zero_shot_runs, kind, "toy_net", "ZeroshotCLIP")
        assert acc >= 3 * chance(spec.SOURCE, half), f"zero-shot {half}: {acc:.1f}%"


def _reference_agrees(world: tw.World, folder: Path, text_features) -> None:
    """The run's base-class accuracy (its results.json) equals one computed with the clip package's own model on
    the same test images, ``text_features(model, classnames)`` giving the class features; one image of slack (the
    two encoders round differently, which may flip a near tie)."""
    from clip.model import build_model
    from PIL import Image

    from anchoropt.toyworld.pretrain import image_tensor

    data = world_dataset(world, spec.SOURCE, "base")
    model = build_model(torch.load(world.clip_path, map_location="cpu", weights_only=True)).float().eval()
    with torch.no_grad():
        text = text_features(model, data.classnames)
        pixels = np.stack([np.asarray(Image.open(item.impath).convert("RGB")) for item in data.test])
        image = model.encode_image(image_tensor(pixels))
        predicted = (F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()).argmax(1)
    labels = torch.tensor([item.label for item in data.test])
    reference = 100.0 * (predicted == labels).float().mean().item()
    measured = json.loads((folder / "results.json").read_text())["metrics"]["accuracy"]
    assert abs(measured - reference) <= 100.0 / len(labels) + 1e-6, (
        f"{folder}: {measured:.2f}% vs {reference:.2f}% with the clip package's own encoders"
    )


@pytest.mark.slow  # end to end through the protocol scripts
def test_zero_shot_equals_clips_own_encoders_on_the_same_images(toy_world: tw.World, zero_shot_runs: Path) -> None:
    """The scripts' ZeroshotCLIP against ``CLIP.encode_text`` (which reads the end-of-text token) and
    ``CLIP.encode_image``: a read-out one position off, a wrong template or image transform changes predictions
    (the threshold tests above do not see a read-out at the "." before EOT: it scores about as well)."""
    import clip

    folder = run_dir(zero_shot_runs, "train_base", "toy_net", "ZeroshotCLIP")
    (template,) = json.loads((folder / "results.json").read_text())["templates"]
    _reference_agrees(
        toy_world, folder, lambda model, names: model.encode_text(clip.tokenize([template.format(n) for n in names]))
    )


@pytest.mark.slow  # end to end through the protocol scripts
def test_anchor_prompt_equals_clips_own_text_tower_with_the_anchor(toy_world: tw.World, anchoropt_runs: Path) -> None:
    """Stage I's anchor-only prompt "[A] of <class>." against CLIP's own text tower run on the tokens of
    "x of <class>." with the learned anchor in place of "x": catches a wrong anchor slot, layout or read-out."""
    import clip

    from anchoropt.method.anchor_checkpoint import load_anchor

    folder = run_dir(anchoropt_runs, "train_base", "toy_net", "AnchorOPT_StageI")
    anchor = load_anchor(folder).anchor
    assert anchor.shape[0] == 1  # one anchor token (the released recipe)

    def anchor_features(model, names):
        tokens = clip.tokenize([f"x of {name}." for name in names])
        x = model.token_embedding(tokens)
        x[:, 1] = anchor[0]  # position 0 is the start token
        x = model.transformer((x + model.positional_embedding).permute(1, 0, 2)).permute(1, 0, 2)
        return model.ln_final(x)[torch.arange(len(names)), tokens.argmax(-1)] @ model.text_projection

    _reference_agrees(toy_world, folder, anchor_features)


@pytest.mark.slow  # end to end through the protocol scripts
def test_coop_raises_base_accuracy_over_zero_shot(zero_shot_runs: Path, coop_runs: Path) -> None:
    zero_shot = accuracy(zero_shot_runs, "train_base", "toy_net", "ZeroshotCLIP")
    coop = accuracy(coop_runs, "train_base", "toy_net", "CoOp")
    assert coop >= zero_shot + 3.0, f"CoOp base {coop:.1f}% vs zero-shot {zero_shot:.1f}%"


@pytest.mark.slow  # end to end through the protocol scripts
def test_stage1_lowers_description_mse_and_the_anchor_prompt_scores_well_above_chance(anchoropt_runs: Path) -> None:
    stage1 = run_dir(anchoropt_runs, "train_base", "toy_net", "AnchorOPT_StageI")
    # The description MSE itself, per epoch, from the machine-readable history (not the log).
    history = [json.loads(line) for line in (stage1 / "train_history.jsonl").read_text().splitlines()]
    losses = [entry["mse"] for entry in history]
    # The random-weight CLIP moved it 0.5% (26.27 -> 26.15); one anchor token cannot match every sentence.
    assert len(losses) >= STAGE1_EPOCHS and losses[-1] <= 0.9 * losses[0], f"Stage I MSE {losses[0]} -> {losses[-1]}"
    for half, kind in (("base", "train_base"), ("new", "test_new")):
        acc = accuracy(anchoropt_runs, kind, "toy_net", "AnchorOPT_StageI")
        assert acc >= 3 * chance(spec.SOURCE, half), f"anchor-only prompt, {half} classes: {acc:.1f}%"


@pytest.mark.slow  # end to end through the protocol scripts
def test_coop_anchoropt_trained_on_base_scores_novel_classes_above_chance(anchoropt_runs: Path) -> None:
    novel = accuracy(anchoropt_runs, "test_new", "toy_net", "CoOp_AnchorOPT")
    assert novel >= 3 * chance(spec.SOURCE, "new"), f"CoOp_AnchorOPT novel: {novel:.1f}%"
    assert (run_dir(anchoropt_runs, "train_base", "toy_net", "CoOp_AnchorOPT") / "positions.png").is_file()


@pytest.mark.slow  # end to end through the protocol scripts
def test_results_table_shows_the_three_methods(
    zero_shot_runs: Path, coop_runs: Path, anchoropt_runs: Path, capsys
) -> None:
    assert results_main([str(anchoropt_runs), "--seeds", str(SEED), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {m["trainer"]: {r["dataset"]: r for r in m["datasets"]} for m in report["base2new"]}
    for trainer in ("ZeroshotCLIP", "CoOp", "CoOp_AnchorOPT"):
        row = rows[trainer]["ToyNet"]
        assert row["complete"] and row["hm"] is not None
