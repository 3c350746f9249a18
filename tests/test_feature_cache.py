"""Frozen image features: the evaluation cache gives the same logits bit for bit without touching an image,
any change to weights, transform, precision or image list selects another entry, concurrent fills leave one
valid entry, the list/prune command, and the opt-in K-view training cache."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import trainers  # noqa: F401  (registers the trainers and their config nodes)
from anchoropt.backbone.random_clip import build_random_clip, save_clip_state_dict
from anchoropt.cli import feature_cache as cache_cli
from anchoropt.engine import DatasetWrapper
from anchoropt.errors import ConfigError
from anchoropt.features import CachedViewLoader, FeatureStore, cache_key
from anchoropt.features.store import FEATURES_FILE, META_FILE, format_size
from anchoropt.models.clip_parts import ImageEncoder
from tests.support.anchoropt_runs import build_trainer_from_args, make_env_with_anchor, make_tiny_env, record_method
from tests.support.clip_fixtures import tiny_clip, tiny_clip_dir, tiny_clip_state_dict_file  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore:description file .* fewer than")

FROZEN_TRAINERS = [
    "CoOp",
    "CoCoOp",
    "DePT",
    "ZeroshotCLIP",
    "AnchorOPT_StageI",
    "CoOp_AnchorOPT",
    "CoCoOp_AnchorOPT",
    "DePT_AnchorOPT",
]
AUGMENT = ("INPUT.TRANSFORMS", "('random_resized_crop', 'random_flip', 'normalize')")


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_clip_state_dict_file):  # noqa: F811
    return make_env_with_anchor(tmp_path_factory.mktemp("feature_cache_env"), tiny_clip_state_dict_file)


def build(env, trainer: str, out: Path, *opts: str, subsample: str = "all"):
    extra = ("TRAINER.ANCHOROPT.ANCHOR_PATH", str(env.stage1)) if trainer.endswith("AnchorOPT") else ()
    return build_trainer_from_args(env.args(trainer, out, *extra, *opts, subsample=subsample))


def evaluate(trainer) -> tuple[torch.Tensor, dict]:
    """(every test logit in order, {image-tower runs, images read}) of one `trainer.test()`."""
    outputs, counts = [], {"tower": 0, "images_read": 0}
    process = trainer.evaluator.process
    trainer.evaluator.process = lambda output, label: outputs.append(output.clone()) or process(output, label)
    encoder = trainer.frozen_image_encoder() if trainer.IMAGE_ENCODER_FROZEN else trainer.model.image_encoder
    hook = encoder.visual.conv1.register_forward_hook(lambda *_: counts.__setitem__("tower", counts["tower"] + 1))
    get_item = DatasetWrapper.__getitem__

    def counting_get_item(self, idx):
        counts["images_read"] += 1
        return get_item(self, idx)

    DatasetWrapper.__getitem__ = counting_get_item
    try:
        trainer.test()
    finally:
        DatasetWrapper.__getitem__ = get_item
        hook.remove()
        trainer.evaluator.process = process
    return torch.cat(outputs), counts


def store_of(trainer) -> FeatureStore:
    return trainer.feature_store()


def key_of(trainer) -> str:
    return cache_key(trainer.feature_cache_parts(trainer.test_loader))


# ---------------------------------------------------------------- evaluation: identical results, no image read


@pytest.mark.parametrize("name", FROZEN_TRAINERS)
def test_cached_evaluation_gives_identical_logits_without_reading_an_image(env, tmp_path, name):
    cache = tmp_path / "cache"
    trainer = build(env, name, tmp_path / "out", "FEATURE_CACHE.ENABLED", "False", "FEATURE_CACHE.DIR", str(cache))
    off, off_counts = evaluate(trainer)
    assert not cache.exists() and off_counts["tower"] == len(trainer.test_loader)  # switched off: nothing written
    trainer.cfg.defrost()
    trainer.cfg.FEATURE_CACHE.ENABLED = True
    trainer.cfg.freeze()
    first, first_counts = evaluate(trainer)
    second, second_counts = evaluate(trainer)
    n_test = len(trainer.test_loader.dataset)
    assert first_counts == {"tower": len(trainer.test_loader), "images_read": n_test}  # filled: encoded once
    assert second_counts == {"tower": 0, "images_read": 0}  # hit: not an image decoded, nor the tower run
    assert torch.equal(first, off) and torch.equal(second, off)  # bit for bit (fp32)
    entries = store_of(trainer).entries()
    assert len(entries) == 1 and entries[0].meta["num_images"] == n_test


def test_a_new_trainer_reads_the_entry_another_trainer_filled(env, tmp_path):
    cache = str(tmp_path / "cache")
    coop, _ = evaluate(build(env, "CoOp", tmp_path / "a", "FEATURE_CACHE.DIR", cache))
    reader = build(env, "ZeroshotCLIP", tmp_path / "b", "FEATURE_CACHE.DIR", cache)
    logits, counts = evaluate(reader)
    assert counts["tower"] == 0 and coop.shape == logits.shape
    assert len(store_of(reader).entries()) == 1


def test_maple_keeps_encoding_its_images(env, tmp_path):
    cache = tmp_path / "cache"
    trainer = build(env, "MaPLe", tmp_path / "m", "TRAINER.MAPLE.PROMPT_DEPTH", "2", "FEATURE_CACHE.DIR", str(cache))
    _, counts = evaluate(trainer)
    assert counts["images_read"] == len(trainer.test_loader.dataset) and not cache.exists()
    with pytest.raises(ConfigError, match="TRAIN_VIEWS=2: MaPLe trains through its image encoder"):
        build(
            env, "MaPLe", tmp_path / "m2", "TRAINER.MAPLE.PROMPT_DEPTH", "2", "FEATURE_CACHE.TRAIN_VIEWS", "2"
        ).train()


# ---------------------------------------------------------------- invalidation


def test_the_key_changes_with_weights_transform_precision_and_image_list(env, tmp_path, tiny_clip):  # noqa: F811
    base = key_of(build(env, "CoOp", tmp_path / "o"))
    assert key_of(build(env, "CoOp", tmp_path / "o")) == base  # deterministic

    same_bytes = tmp_path / "copy_of_weights.pt"
    same_bytes.write_bytes(Path(env.clip_file).read_bytes())
    assert key_of(build(env, "CoOp", tmp_path / "o", "MODEL.BACKBONE.PATH", str(same_bytes))) == base

    changed = build_random_clip("tiny", seed=0)
    with torch.no_grad():
        changed.visual.proj[0, 0] += 1e-3  # one weight of the image tower
    changed_file = save_clip_state_dict(changed, tmp_path / "changed.pt")
    variants = {
        "weight file": ("MODEL.BACKBONE.PATH", str(changed_file)),
        "transform": ("INPUT.PIXEL_MEAN", "[0.5, 0.5, 0.5]"),
        "interpolation": ("INPUT.INTERPOLATION", "bicubic"),
        "precision": ("TRAINER.COOP.PREC", "amp"),
    }
    keys = {what: key_of(build(env, "CoOp", tmp_path / "o", *opts)) for what, opts in variants.items()}
    keys["image subset"] = key_of(build(env, "CoOp", tmp_path / "o", subsample="base"))
    assert len(set(keys.values()) | {base}) == len(keys) + 1, keys

    image = Path(build(env, "CoOp", tmp_path / "o").test_loader.dataset.data_source[0].impath)
    content = image.read_bytes()
    image.write_bytes(content + b"\0")  # same name, other bytes
    try:
        assert key_of(build(env, "CoOp", tmp_path / "o")) != base
    finally:
        image.write_bytes(content)


def test_a_changed_weight_file_is_encoded_again_not_read(env, tmp_path):
    cache = str(tmp_path / "cache")
    weights = tmp_path / "weights.pt"
    weights.write_bytes(Path(env.clip_file).read_bytes())
    opts = ("FEATURE_CACHE.DIR", cache, "MODEL.BACKBONE.PATH", str(weights))
    evaluate(build(env, "CoOp", tmp_path / "a", *opts))
    changed = build_random_clip("tiny", seed=3)
    save_clip_state_dict(changed, weights)  # same path, other weights
    trainer = build(env, "CoOp", tmp_path / "b", *opts)
    _, counts = evaluate(trainer)
    assert counts["tower"] == len(trainer.test_loader)
    assert len(store_of(trainer).entries()) == 2


# ---------------------------------------------------------------- the store: atomic, concurrent, memory-mapped


def fill_in_process(root: str, results) -> None:
    def fill():
        time.sleep(1.0)  # long enough for the other process to arrive while this one fills
        return torch.arange(12.0).reshape(4, 3)

    features, how, _ = FeatureStore(root).get_or_fill("k" * 64, {"dataset": "x"}, fill)
    results.put((how, features.sum().item()))


def test_two_processes_filling_at_once_leave_one_valid_entry(tmp_path):
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    procs = [context.Process(target=fill_in_process, args=(str(tmp_path), results)) for _ in range(2)]
    for proc in procs:
        proc.start()
    outcomes = sorted(results.get(timeout=60) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
    assert [proc.exitcode for proc in procs] == [0, 0]
    assert outcomes == [("filled", 66.0), ("hit", 66.0)]  # one encoded; the other waited and read its entry
    store = FeatureStore(str(tmp_path))
    [entry] = store.entries()
    assert torch.equal(entry.load(), torch.arange(12.0).reshape(4, 3))
    leftovers = [name for name in os.listdir(entry.directory) if name not in (FEATURES_FILE, META_FILE)]
    assert leftovers == [] and store.unusable() == []


def test_entries_are_memory_mapped_and_a_damaged_or_unfinished_entry_is_never_read(tmp_path):
    store = FeatureStore(str(tmp_path))
    features = torch.randn(5, 3)
    store.get_or_fill("a" * 64, {}, lambda: features)
    loaded, how, entry = store.get_or_fill("a" * 64, {}, lambda: pytest.fail("must not encode again"))
    assert how == "hit" and torch.equal(loaded, features)
    with open("/proc/self/maps") as maps:
        assert entry.features_path in maps.read()  # read through mmap, not into memory

    with open(entry.features_path, "ab") as handle:
        handle.write(b"x")  # damaged: no longer the size its meta records
    again, how, _ = store.get_or_fill("a" * 64, {}, lambda: features + 1)
    assert how == "filled" and torch.equal(again, features + 1)

    def crash():
        raise RuntimeError("killed while encoding")

    with pytest.raises(RuntimeError):
        store.get_or_fill("b" * 64, {}, crash)
    assert store.lookup("b" * 64) is None
    unfinished = Path(store.entry_dir("c" * 64))
    unfinished.mkdir()
    (unfinished / FEATURES_FILE).write_bytes(b"partial")  # features written, meta not yet: incomplete
    assert store.lookup("c" * 64) is None and str(unfinished) in store.unusable()


def test_image_encoder_passes_precomputed_features_through(tiny_clip):  # noqa: F811
    encoder = ImageEncoder(tiny_clip)
    images = torch.randn(2, 3, 32, 32)
    raw = encoder.raw(images)
    assert torch.equal(encoder(raw), encoder(images))
    with pytest.raises(ValueError, match="width 7 do not fit this image encoder"):
        encoder(torch.randn(2, 7))


# ---------------------------------------------------------------- the list / prune command


def fill_entry(store: FeatureStore, key: str, rows: int, age_days: float = 0.0) -> str:
    store.get_or_fill(key, {"dataset": "Toy", "split": "test", "backbone": "tiny"}, lambda: torch.zeros(rows, 4))
    meta = os.path.join(store.entry_dir(key), META_FILE)
    stamp = time.time() - age_days * 86400
    os.utime(meta, (stamp, stamp))
    return store.entry_dir(key)


def test_list_and_prune(tmp_path, capsys):
    store = FeatureStore(str(tmp_path))
    old = fill_entry(store, "1" * 64, 1000, age_days=40)
    mid = fill_entry(store, "2" * 64, 1000, age_days=5)
    new = fill_entry(store, "3" * 64, 10)
    os.makedirs(store.entry_dir("4" * 64))  # left by a crash
    assert cache_cli.main(["--dir", str(tmp_path), "list"]) == 0
    out = capsys.readouterr().out
    total = format_size(sum(entry.size_bytes for entry in store.entries()))
    assert f"3 entries, {total} in {tmp_path}; 1 unusable" in out and out.count("Toy ") == 3

    assert cache_cli.main(["--dir", str(tmp_path), "prune", "--unused-days", "30", "--dry-run"]) == 0
    assert os.path.isdir(old)  # dry run
    assert cache_cli.main(["--dir", str(tmp_path), "prune", "--unused-days", "30"]) == 0
    assert not os.path.exists(old) and os.path.isdir(mid) and not os.path.exists(store.entry_dir("4" * 64))
    assert cache_cli.main(["--dir", str(tmp_path), "prune", "--max-size", "5K"]) == 0
    assert not os.path.exists(mid) and os.path.isdir(new)  # least recently used goes first
    assert cache_cli.main(["--dir", str(tmp_path), "prune", "--all"]) == 0
    assert store.entries() == [] and os.listdir(tmp_path) == []
    capsys.readouterr()
    assert cache_cli.run_cli(cache_cli.main)(["--dir", str(tmp_path), "prune", "--max-size", "lots"]) == 2
    assert capsys.readouterr().err.strip() == "error: --max-size 'lots': expected a size such as 500M, 2G or 1.5GiB"


# ---------------------------------------------------------------- training on K cached views


def add_texture(image_dir: Path) -> None:
    """Overwrite every generated (one-colour) image with noise, so random crops and flips change it."""
    gen = np.random.default_rng(0)
    for path in sorted(image_dir.rglob("*.jpg")):
        Image.fromarray(gen.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)


def test_training_views_are_encoded_once_and_each_epoch_draws_one_view_per_image(
    tmp_path, monkeypatch, tiny_clip_state_dict_file
):  # noqa: F811,E501
    textured = make_tiny_env(tmp_path / "env", tiny_clip_state_dict_file, n_classes=2, n_per_class=6)
    add_texture(textured.root / "data")
    views_k = 3
    trainer = build(
        textured, "CoOp", tmp_path / "t", *AUGMENT, "FEATURE_CACHE.TRAIN_VIEWS", str(views_k), "OPTIM.MAX_EPOCH", "2",
        "TEST.NO_TEST", "True", subsample="all",
    )  # fmt: skip
    n_train = len(trainer.train_loader_x.dataset)
    tower = []
    trainer.model.image_encoder.visual.conv1.register_forward_hook(lambda _, args, __: tower.append(args[0].shape[0]))
    steps = record_method(monkeypatch, type(trainer), "forward_backward", lambda self, _, batch: batch["img"].dim())
    trainer.train()
    assert sum(tower) == views_k * n_train  # every view encoded once, before the first step; none in training
    assert len(steps) == 2 * len(trainer.train_loader_x) and set(steps) == {2}  # every step got features [B, e]
    loader = trainer.train_loader_x
    assert isinstance(loader, CachedViewLoader) and loader.views.shape[:2] == (views_k, n_train)
    for a, b in ((0, 1), (1, 2)):  # random augmentation: each image's views differ
        assert not torch.isclose(loader.views[a], loader.views[b]).all(dim=1).any()
    assert torch.equal(loader.view_choice(1), loader.view_choice(1))  # stateless per epoch: resumes draw the same
    assert not torch.equal(loader.view_choice(0), loader.view_choice(1))


@pytest.mark.parametrize("ce_weight", ["0.0", "1.0"])
def test_stage1_trains_its_image_term_on_cached_views_and_without_it_encodes_nothing(env, tmp_path, ce_weight):
    opts = ("FEATURE_CACHE.TRAIN_VIEWS", "2", "OPTIM.MAX_EPOCH", "1", "TEST.NO_TEST", "True")
    opts += ("TRAINER.ANCHOROPT.ANCHOR_CE_WEIGHT", ce_weight)
    trainer = build(env, "AnchorOPT_StageI", tmp_path / "s", *opts, subsample="base")
    tower = []
    trainer.model.image_encoder.visual.conv1.register_forward_hook(lambda _, args, __: tower.append(args[0].shape[0]))
    trainer.train()
    if ce_weight == "0.0":  # the loss needs no image: none is encoded, the loader is not replaced
        assert tower == [] and not isinstance(trainer.train_loader_x, CachedViewLoader)
    else:  # the CE term reads the cached views: 2 views per image encoded once, no image in the steps
        assert sum(tower) == 2 * len(trainer.dm.dataset.train_x)
        assert isinstance(trainer.train_loader_x, CachedViewLoader)
