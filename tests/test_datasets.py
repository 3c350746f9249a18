"""The 15 dataset classes on generated copies of their real layouts: classes, labels, splits, few-shot, base/new."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import traceback
import warnings
from collections import Counter, defaultdict

import pytest
import torchvision.transforms as T

import anchoropt.datasets  # noqa: F401  (registers the datasets)
from anchoropt.cli.errors import user_error_message
from anchoropt.config import build_config
from anchoropt.datasets import imagenet as imagenet_module
from anchoropt.datasets.fewshot import fewshot_cache_path
from anchoropt.engine import DATASET_REGISTRY, DatasetWrapper, build_data_loader
from anchoropt.errors import ConfigError, DataError
from tests.support.data_layouts import (
    DATASET_NAMES,
    FOLDER_SPLIT,
    TEST_ONLY,
    TRAINVAL_SPLIT,
    base_new_classnames,
    dataset_cfg,
    dataset_writer,  # noqa: F401  (pytest fixture)
    load_dataset,
    variant_class_indices,
    write_dataset,
)

BENCHMARKS = [n for n in DATASET_NAMES if n not in TEST_ONLY]
WITH_SPLIT_FILE = [n for n in BENCHMARKS if n not in ("ImageNet", "FGVCAircraft")]
RANDOM_SPLIT = ("DATASET.RANDOM_SPLIT_IF_MISSING", "True")  # the opt-in to CoOp's random split


@pytest.fixture(autouse=True)
def _quiet_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def per_class(items) -> Counter:
    return Counter(item.label for item in items)


def sample_key(items) -> list[tuple[str, int]]:
    return [(os.path.basename(i.impath), i.label) for i in items]


def test_registry_holds_coops_names():
    assert set(DATASET_NAMES) <= set(DATASET_REGISTRY.registered_names())


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_config_file_names_the_registered_dataset(name, dataset_writer):
    info = dataset_writer(name)
    cfg = build_config(dataset_config_file=info.config_file, opts=["DATASET.ROOT", str(info.root)])
    assert cfg.DATASET.NAME == name and cfg.DATASET.NUM_SHOTS == 16
    assert DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg).classnames == info.classnames


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_full_dataset_classes_labels_and_split_sizes(name, dataset_writer):
    info = dataset_writer(name)
    ds = load_dataset(info.root, name)
    assert ds.classnames == info.classnames
    assert ds.num_classes == info.num_classes
    assert ds.lab2cname == dict(enumerate(info.classnames))
    splits = (
        {"train": ds.train_x, "test": ds.test}
        if name in TEST_ONLY
        else {"train": ds.train_x, "val": ds.val, "test": ds.test}
    )
    for split, items in splits.items():
        assert per_class(items) == {label: info.per_class[split] for label in range(info.num_classes)}, split
        assert all(item.classname == info.classnames[item.label] for item in items)
        assert all(os.path.isabs(item.impath) and os.path.isfile(item.impath) for item in items)
    if name == "ImageNet":
        assert ds.val is ds.test  # CoOp evaluates ImageNet's val set as its test set
    if name in TEST_ONLY:
        assert ds.train_x == ds.test and not ds.val


@pytest.mark.parametrize("name", ["ImageNetA", "ImageNetR"])
def test_imagenet_a_and_r_label_the_wnid_folders_they_hold(name, dataset_writer):
    info = dataset_writer(name, n_classes=7)
    names = (info.dataset_dir / "classnames.txt").read_text().splitlines()
    used = variant_class_indices(name, 7)
    ds = load_dataset(info.root, name)
    assert ds.classnames == [names[k].split(" ", 1)[1] for k in used]
    wnids = sorted({os.path.basename(os.path.dirname(item.impath)) for item in ds.test})
    assert [wnids.index(os.path.basename(os.path.dirname(i.impath))) for i in ds.test] == [i.label for i in ds.test]


def test_imagenet_sketch_accepts_the_archives_sketch_folder(dataset_writer):
    info = dataset_writer("ImageNetSketch")
    os.rename(info.dataset_dir / "images", info.dataset_dir / "sketch")
    ds = load_dataset(info.root, "ImageNetSketch")
    assert ds.classnames == info.classnames and len(ds.test) == info.split_size("test")


@pytest.mark.parametrize("name", BENCHMARKS)
def test_fewshot_counts_per_class(name, dataset_writer):
    info = dataset_writer(name)
    ds = load_dataset(info.root, name, num_shots=2, seed=1)
    assert per_class(ds.train_x) == {label: 2 for label in range(info.num_classes)}
    if name == "ImageNet":
        assert ds.val is ds.test and len(ds.test) == info.split_size("test")
    else:
        assert per_class(ds.val) == {label: 2 for label in range(info.num_classes)}
        assert len(ds.test) == info.split_size("test")
    cache = fewshot_cache_path(str(info.dataset_dir), 2, 1)
    assert os.path.isfile(cache) and not os.path.exists(cache.replace(".json", ".pkl"))


def test_validation_shots_are_capped_at_four_and_short_classes_keep_all(dataset_writer):
    info = dataset_writer("OxfordPets", n_per_class=30)  # 15 train, 6 val, 9 test per class
    ds = load_dataset(info.root, "OxfordPets", num_shots=8)
    assert set(per_class(ds.train_x).values()) == {8} and set(per_class(ds.val).values()) == {4}
    ds = load_dataset(info.root, "OxfordPets", num_shots=16)
    assert set(per_class(ds.train_x).values()) == {15}  # fewer than K: all of them, as Dassl does


@pytest.mark.parametrize("name", BENCHMARKS)
def test_base_and_new_classes(name, dataset_writer):
    info = dataset_writer(name)
    base_names, new_names = base_new_classnames(info)
    assert len(base_names) == math.ceil(info.num_classes / 2)
    full = load_dataset(info.root, name, num_shots=2)
    for subsample, names in (("base", base_names), ("new", new_names)):
        ds = load_dataset(info.root, name, num_shots=2, subsample=subsample)
        assert ds.classnames == names
        assert ds.num_classes == len(names)
        offset = 0 if subsample == "base" else len(base_names)
        for part, whole in ((ds.train_x, full.train_x), (ds.test, full.test)):
            assert {i.label for i in part} == set(range(len(names)))
            kept = [(i.impath, i.label - offset) for i in whole if (i.label < len(base_names)) == (subsample == "base")]
            assert [(i.impath, i.label) for i in part] == kept  # same images, relabelled from 0
        if name == "ImageNet":
            assert ds.val is ds.test


def test_odd_class_count_puts_the_middle_class_in_base(dataset_writer):
    info = dataset_writer("EuroSAT", n_classes=5)
    base = load_dataset(info.root, "EuroSAT", subsample="base")
    new = load_dataset(info.root, "EuroSAT", subsample="new")
    assert base.classnames == ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land"]
    assert new.classnames == ["Highway or Road", "Industrial Buildings"]
    assert per_class(new.test) == {0: info.per_class["test"], 1: info.per_class["test"]}


def test_unknown_subsample_value_is_a_config_error(dataset_writer):
    info = dataset_writer("DescribableTextures")
    with pytest.raises(ConfigError, match="SUBSAMPLE_CLASSES.*'novel'"):
        load_dataset(info.root, "DescribableTextures", subsample="novel")
    with pytest.raises(ConfigError, match="SUBSAMPLE_CLASSES"):
        load_dataset(info.root, "ImageNetA", subsample="novel")


def test_variant_ignores_base_new_as_coop_does(dataset_writer):
    info = dataset_writer("ImageNetR")
    with pytest.warns(UserWarning, match="test-only"):
        warnings.simplefilter("always")
        ds = load_dataset(info.root, "ImageNetR", subsample="new")
    assert ds.classnames == info.classnames


# --------------------------------------------------------------------------- seeds and the cache


def coop_fewshot_sample(split_file: str, seed: int, num_shots: int) -> tuple[list, list]:
    """CoOp's sample, written out: seed, then random.sample per class (first-appearance order), train then val."""
    split = json.loads(open(split_file).read())
    random.seed(seed)
    out = []
    for key, k in (("train", num_shots), ("val", min(num_shots, 4))):
        by_label = defaultdict(list)
        for row in split[key]:
            by_label[row[1]].append(row)
        sample = []
        for rows in by_label.values():
            sample += random.sample(rows, k) if len(rows) >= k else rows
        out.append([(os.path.basename(r[0]), r[1]) for r in sample])
    return out[0], out[1]


def test_sample_matches_coop_and_ignores_earlier_random_draws(dataset_writer):
    info = dataset_writer("Food101", n_per_class=20)
    expected_train, expected_val = coop_fewshot_sample(str(info.dataset_dir / "split_zhou_Food101.json"), 3, 4)
    random.seed(12345)
    [random.random() for _ in range(17)]  # whatever ran before the dataset was built
    ds = load_dataset(info.root, "Food101", num_shots=4, seed=3)
    assert sample_key(ds.train_x) == expected_train and sample_key(ds.val) == expected_val


def test_same_seed_same_sample_without_cache_and_different_seed_differs(dataset_writer):
    info = dataset_writer("Caltech101", n_per_class=20)
    first = load_dataset(info.root, "Caltech101", num_shots=4, seed=1)
    cached = load_dataset(info.root, "Caltech101", num_shots=4, seed=1)
    os.remove(fewshot_cache_path(str(info.dataset_dir), 4, 1))
    resampled = load_dataset(info.root, "Caltech101", num_shots=4, seed=1)
    other = load_dataset(info.root, "Caltech101", num_shots=4, seed=2)
    assert sample_key(first.train_x) == sample_key(cached.train_x) == sample_key(resampled.train_x)
    assert sample_key(first.val) == sample_key(resampled.val)
    assert sample_key(other.train_x) != sample_key(first.train_x)
    assert os.path.isfile(fewshot_cache_path(str(info.dataset_dir), 4, 2))


def test_cache_is_relative_json_and_survives_moving_the_root(dataset_writer, tmp_path, capsys):
    info = dataset_writer("OxfordFlowers", n_per_class=12)
    first = load_dataset(info.root, "OxfordFlowers", num_shots=2, seed=5)
    cache = fewshot_cache_path(str(info.dataset_dir), 2, 5)
    payload = json.loads(open(cache).read())
    assert payload["num_shots"] == 2 and payload["seed"] == 5
    assert all(not os.path.isabs(row[0]) for row in payload["train"] + payload["val"])
    moved = tmp_path / "moved"
    shutil.move(str(info.root), str(moved))
    capsys.readouterr()
    again = load_dataset(moved, "OxfordFlowers", num_shots=2, seed=5)
    assert "Loading preprocessed few-shot data" in capsys.readouterr().out
    assert sample_key(again.train_x) == sample_key(first.train_x)
    assert all(item.impath.startswith(str(moved)) for item in again.train_x + again.val)


def test_corrupt_or_stale_cache_is_resampled(dataset_writer):
    info = dataset_writer("DescribableTextures", n_per_class=20)
    first = load_dataset(info.root, "DescribableTextures", num_shots=2, seed=1)
    cache = fewshot_cache_path(str(info.dataset_dir), 2, 1)
    with open(cache, "w") as f:
        f.write("{not json")
    with pytest.warns(UserWarning, match="Ignoring the few-shot cache"):
        warnings.simplefilter("always")
        again = load_dataset(info.root, "DescribableTextures", num_shots=2, seed=1)
    assert sample_key(again.train_x) == sample_key(first.train_x)
    # A changed split (here: the split file replaced) invalidates the cache.
    split_file = info.dataset_dir / "split_zhou_DescribableTextures.json"
    split = json.loads(split_file.read_text())
    split["train"] = split["train"][::-1]
    split_file.write_text(json.dumps(split))
    with pytest.warns(UserWarning, match="split it was drawn from has changed"):
        warnings.simplefilter("always")
        load_dataset(info.root, "DescribableTextures", num_shots=2, seed=1)


# --------------------------------------------------------------------------- splits built when the file is missing


@pytest.mark.parametrize("name", TRAINVAL_SPLIT + FOLDER_SPLIT)
def test_missing_split_file_is_built_like_coop_and_saved(name, tmp_path):
    info = write_dataset(name, tmp_path / "a", with_split=False)
    reference = write_dataset(name, tmp_path / "b", with_split=True)
    with pytest.warns(UserWarning, match="building a new random split"):
        warnings.simplefilter("always")
        ds = load_dataset(info.root, name, *RANDOM_SPLIT, seed=1)
    assert ds.classnames == reference.classnames  # same names and label order as CoOp's split file
    expected = info.generated_split_per_class()
    for split, items in (("train", ds.train_x), ("val", ds.val), ("test", ds.test)):
        assert per_class(items) == {label: expected[split] for label in range(info.num_classes)}, split
    split_file = info.dataset_dir / os.path.basename(next(reference.dataset_dir.glob("split_zhou_*.json")))
    saved = json.loads(split_file.read_text())
    assert [r[0] for r in saved["train"]] == [os.path.relpath(i.impath, ds.image_dir) for i in ds.train_x]
    other_root = write_dataset(name, tmp_path / "c", with_split=False)
    again = load_dataset(other_root.root, name, *RANDOM_SPLIT, seed=1)
    assert sample_key(again.train_x) == sample_key(ds.train_x)  # deterministic for a seed


def test_caltech_ignores_background_folders_and_renames(tmp_path):
    info = write_dataset("Caltech101", tmp_path, n_classes=6, with_split=False)
    ds = load_dataset(info.root, "Caltech101", *RANDOM_SPLIT)
    assert ds.classnames == ["face", "leopard", "motorbike", "accordion", "airplane", "anchor"]
    assert not any("BACKGROUND_Google" in i.impath or "Faces_easy" in i.impath for i in ds.train_x + ds.test)


# --------------------------------------------------------------------------- errors


def test_root_not_set_missing_or_empty(tmp_path):
    with pytest.raises(DataError, match="DATASET.ROOT is not set"):
        DATASET_REGISTRY.get("OxfordPets")(dataset_cfg("", "OxfordPets"))
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'} does not exist"):
        load_dataset(tmp_path / "nope", "OxfordPets")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty"):
        load_dataset(tmp_path / "empty", "OxfordPets")


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_missing_dataset_folder_names_folder_root_and_command(name, dataset_writer):
    other = "EuroSAT" if name != "EuroSAT" else "DescribableTextures"
    info = dataset_writer(other)
    with pytest.raises(DataError) as e:
        load_dataset(info.root, name)
    msg = str(e.value)
    folder = {"ImageNetA": "imagenet-adversarial", "Caltech101": "caltech-101"}.get(name)
    assert name in msg and str(info.root) in msg and "anchoropt-prepare-data" in msg
    if folder:
        assert f"'{folder}'" in msg


def test_missing_image_folder_is_named(dataset_writer):
    info = dataset_writer("UCF101")
    shutil.rmtree(info.dataset_dir / "UCF-101-midframes")
    with pytest.raises(DataError, match="UCF-101-midframes/ .*middle frames"):
        load_dataset(info.root, "UCF101")


def test_missing_split_file_without_sources(dataset_writer):
    info = dataset_writer("OxfordPets")
    os.remove(info.dataset_dir / "split_zhou_OxfordPets.json")
    shutil.rmtree(info.dataset_dir / "annotations")
    with pytest.raises(DataError) as e:
        load_dataset(info.root, "OxfordPets", *RANDOM_SPLIT)
    msg = str(e.value)
    assert "split_zhou_OxfordPets.json" in msg and "--download-splits" in msg and "trainval.txt" in msg


def test_split_listing_missing_images_reports_count_and_examples(dataset_writer):
    info = dataset_writer("SUN397")
    gone = sorted((info.dataset_dir / "SUN397" / "a" / "abbey").iterdir())
    for path in gone:
        path.unlink()
    with pytest.raises(DataError) as e:
        load_dataset(info.root, "SUN397")
    msg = str(e.value)
    assert f"{len(gone)} of {info.split_size('train') + info.split_size('val') + info.split_size('test')}" in msg
    assert "split_zhou_SUN397.json" in msg and f"a/abbey/{gone[0].name}" in msg and "more" in msg


def test_malformed_split_file(dataset_writer):
    info = dataset_writer("EuroSAT")
    split_file = info.dataset_dir / "split_zhou_EuroSAT.json"
    split_file.write_text('{"train": [["a.jpg", "zero", "x"]], "val": [], "test": []}')
    with pytest.raises(DataError, match=r"split_zhou_EuroSAT.json \['train'\]: row 0"):
        load_dataset(info.root, "EuroSAT")
    split_file.write_text("<html>")
    with pytest.raises(DataError, match="not valid JSON"):
        load_dataset(info.root, "EuroSAT")


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_image_surfaces_from_the_data_loader(dataset_writer, workers):
    info = dataset_writer("StanfordCars")
    ds = load_dataset(info.root, "StanfordCars")
    cfg = dataset_cfg(info.root, "StanfordCars", "DATALOADER.NUM_WORKERS", str(workers))
    tfm = T.Compose([T.Resize((8, 8)), T.ToTensor()])
    # the wrapper every trainer here passes, on either engine
    loader = build_data_loader(
        cfg, data_source=ds.test, batch_size=4, tfm=tfm, is_train=False, dataset_wrapper=DatasetWrapper
    )
    batch = next(iter(loader))
    assert batch["img"].shape == (4, 3, 8, 8) and batch["label"].tolist() == [i.label for i in ds.test[:4]]
    broken = ds.test[5].impath
    with open(broken, "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(DataError) as e:
        list(loader)
    assert user_error_message(e.value) == (
        f"Cannot decode image {broken}: UnidentifiedImageError: cannot identify image file '{broken}'"
    )
    traceback.clear_frames(e.tb)  # let the loader's workers stop now, not at a later garbage collection (seconds)


def test_fgvc_variant_missing_from_variants_txt(dataset_writer):
    info = dataset_writer("FGVCAircraft")
    lines = (info.dataset_dir / "variants.txt").read_text().splitlines()
    (info.dataset_dir / "variants.txt").write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(DataError, match="variant '707-320'.*not in variants.txt"):
        load_dataset(info.root, "FGVCAircraft")


def test_imagenet_folder_without_class_name(dataset_writer):
    info = dataset_writer("ImageNetSketch")
    (info.dataset_dir / "images" / "n77777777").mkdir()
    with pytest.raises(DataError, match="1 class folder.*classnames.txt: n77777777"):
        load_dataset(info.root, "ImageNetSketch")


def test_imagenetv2_missing_class_folder(dataset_writer):
    info = dataset_writer("ImageNetV2")
    shutil.rmtree(info.dataset_dir / "imagenetv2-matched-frequency-format-val" / "3")
    with pytest.raises(DataError, match="1 of 6 class folders are missing.*: 3"):
        load_dataset(info.root, "ImageNetV2")


# --------------------------------------------------------------------------- ImageNet's listing cache and file checks


def test_imagenet_listing_is_cached_and_rebuilt_when_folders_change(dataset_writer, monkeypatch):
    info = dataset_writer("ImageNet")
    load_dataset(info.root, "ImageNet")
    index = json.loads((info.dataset_dir / "preprocessed.json").read_text())
    assert list(index["train"]) == sorted(index["train"]) and all(
        "/" not in name for names in index["train"].values() for name in names
    )

    def no_listing(folder):
        raise AssertionError(f"listed {folder} although the cache is current")

    monkeypatch.setattr(imagenet_module, "list_images", no_listing)
    ds = load_dataset(info.root, "ImageNet", num_shots=2)
    assert ds.classnames == info.classnames
    monkeypatch.undo()
    write_dataset("ImageNet", info.root, n_classes=5)  # a new class folder appears
    assert load_dataset(info.root, "ImageNet").num_classes == 5


def test_imagenet_full_training_set_is_not_statted_but_sampled_files_are(dataset_writer):
    info = dataset_writer("ImageNet")
    load_dataset(info.root, "ImageNet")
    index_file = info.dataset_dir / "preprocessed.json"
    index = json.loads(index_file.read_text())
    for wnid in index["train"]:  # as if 1.28 M names were listed: files the loader must not stat one by one
        index["train"][wnid] += [f"{wnid}_ghost_{k}.JPEG" for k in range(300)]
    index_file.write_text(json.dumps(index))
    ds = load_dataset(info.root, "ImageNet")
    assert len(ds.train_x) == info.num_classes * (info.per_class["train"] + 300)
    with pytest.raises(DataError, match=r"\d+ of \d+ images listed in the file listing .*preprocessed.json"):
        load_dataset(info.root, "ImageNet", num_shots=16)


def test_split_check_lists_folders_instead_of_statting_each_image(dataset_writer, monkeypatch):
    info = dataset_writer("Food101", n_per_class=120)
    calls = Counter()
    real_stat = os.stat

    def counting_stat(*args, **kwargs):
        calls["stat"] += 1
        return real_stat(*args, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    ds = load_dataset(info.root, "Food101")
    assert len(ds.train_x) + len(ds.val) + len(ds.test) == 120 * info.num_classes
    assert calls["stat"] < 40
