"""CoOp and zero-shot CLIP through train.py with a tiny CLIP on a generated dataset."""

import json
import os

import clip
import pytest
import torch

from anchoropt.config import build_config
from anchoropt.engine import build_trainer
from anchoropt.errors import CheckpointError, ConfigError
from tests.support.clip_fixtures import tiny_clip, tiny_clip_dir, tiny_clip_state_dict_file  # noqa: F401
from tests.support.data_layouts import base_new_classnames, write_dataset
from tests.support.engine_runs import run_train

EPOCHS = 6


@pytest.fixture(scope="module")
def pets(tmp_path_factory):
    root = tmp_path_factory.mktemp("coop_data")
    return write_dataset("OxfordPets", root, n_classes=5, n_per_class=10)


def coop_args(info, clip_file, out, *flags, opts=()):
    return [
        "--root",
        str(info.root),
        "--seed",
        "1",
        "--trainer",
        "CoOp",
        "--output-dir",
        str(out),
        "--dataset-config-file",
        info.config_file,
        *flags,
        "MODEL.BACKBONE.PATH",
        str(clip_file),
        "INPUT.SIZE",
        "(32, 32)",
        "INPUT.TRANSFORMS",
        "('normalize',)",
        "DATALOADER.NUM_WORKERS",
        "0",
        "DATALOADER.TRAIN_X.BATCH_SIZE",
        "4",
        "DATALOADER.TEST.BATCH_SIZE",
        "4",
        "DATASET.NUM_SHOTS",
        "4",
        "OPTIM.NAME",
        "adam",
        "OPTIM.LR",
        "0.01",
        "OPTIM.MAX_EPOCH",
        str(EPOCHS),
        "OPTIM.LR_SCHEDULER",
        "cosine",
        "TRAINER.COOP.N_CTX",
        "4",
        "TRAINER.COOP.PREC",
        "fp32",
        "TRAIN.PRINT_FREQ",
        "5",
        *opts,
    ]


def read_json(path):
    with open(path) as f:
        return json.load(f)


def history(out):
    with open(os.path.join(out, "train_history.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def trained_base(pets, tiny_clip_state_dict_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("coop_base")
    assert run_train(coop_args(pets, tiny_clip_state_dict_file, out, opts=["DATASET.SUBSAMPLE_CLASSES", "base"])) == 0
    return str(out)


def test_coop_learns_on_base_classes(trained_base, pets):
    hist = history(trained_base)
    assert len(hist) == EPOCHS
    assert hist[-1]["loss"] < hist[0]["loss"]
    n_base = len(base_new_classnames(pets)[0])
    assert hist[-1]["acc"] > 100 / n_base + 20  # well above chance on the training data
    res = read_json(os.path.join(trained_base, "results.json"))
    assert (res["trainer"], res["dataset"], res["subsample"], res["num_classes"]) == (
        "CoOp",
        "OxfordPets",
        "base",
        n_base,
    )
    assert res["metrics"]["accuracy"] > 100 / n_base
    # the checkpoint holds the context only, no class-dependent buffers and no CLIP weights
    ckpt = torch.load(os.path.join(trained_base, "prompt_learner", f"model.pth.tar-{EPOCHS}"), weights_only=True)
    assert list(ckpt["state_dict"]) == ["ctx"] and ckpt["state_dict"]["ctx"].shape == (4, 64)


def test_base_checkpoint_evaluates_on_new_classes(trained_base, pets, tiny_clip_state_dict_file, tmp_path):
    out = tmp_path / "new"
    args = coop_args(
        pets,
        tiny_clip_state_dict_file,
        out,
        "--eval-only",
        "--model-dir",
        trained_base,
        "--load-epoch",
        str(EPOCHS),
        opts=["DATASET.SUBSAMPLE_CLASSES", "new"],
    )
    assert run_train(args) == 0
    res = read_json(out / "results.json")
    assert res["subsample"] == "new" and res["num_classes"] == len(base_new_classnames(pets)[1])
    assert res["num_samples"] == len(base_new_classnames(pets)[1]) * pets.per_class["test"]


def _trainer(pets, clip_file, out, *opts):
    from anchoropt.plugins import load_plugins

    load_plugins()
    args = coop_args(pets, clip_file, out, opts=opts)
    opts_list = args[args.index("MODEL.BACKBONE.PATH") :]
    cfg = build_config(
        pets.config_file,
        opts=["DATASET.ROOT", str(pets.root), "TRAINER.NAME", "CoOp", "OUTPUT_DIR", str(out), "SEED", "1", *opts_list],
    )
    return build_trainer(cfg)


def test_text_features_are_encoded_once_per_evaluation(pets, tiny_clip_state_dict_file, tmp_path):
    trainer = _trainer(pets, tiny_clip_state_dict_file, tmp_path)
    calls = []
    original = trainer.model.text_features

    def counting():
        calls.append(1)
        return original()

    trainer.model.text_features = counting
    trainer.test()
    n_batches = len(trainer.test_loader)
    assert n_batches > 1 and len(calls) == 1
    # cached features give the same logits as recomputing them for the batch
    image = next(iter(trainer.test_loader))["img"]
    trainer.set_model_mode("eval")
    with torch.no_grad():
        trainer.before_evaluation()
        cached = trainer.model_inference(image)
        trainer.after_evaluation()
        direct = trainer.model(image)
    assert torch.allclose(cached, direct, atol=1e-6)


def test_clear_errors_for_backbone_problems(pets, tiny_clip_state_dict_file, tmp_path):
    with pytest.raises(ConfigError, match=r"INPUT.SIZE=\(224, 224\).*expects \(32, 32\)"):
        run_train(coop_args(pets, tiny_clip_state_dict_file, tmp_path / "a", opts=["INPUT.SIZE", "(224, 224)"]))
    with pytest.raises(CheckpointError, match="MODEL.BACKBONE.PATH='/nope/ViT-B-16.pt': no such file"):
        run_train(coop_args(pets, "/nope/ViT-B-16.pt", tmp_path / "b"))
    args = coop_args(pets, "", tmp_path / "c", opts=["MODEL.BACKBONE.NAME", "ViT-Q/99"])
    with pytest.raises(
        ConfigError, match="Unknown CLIP backbone MODEL.BACKBONE.NAME='ViT-Q/99'; available: .*ViT-B/16"
    ):
        run_train(args)


def test_zero_shot_clip_matches_encode_text(pets, tiny_clip, tiny_clip_state_dict_file, tmp_path):
    out = tmp_path / "zs"
    args = coop_args(pets, tiny_clip_state_dict_file, out, "--eval-only")
    args[args.index("CoOp")] = "ZeroshotCLIP"
    assert run_train(args) == 0
    res = read_json(out / "results.json")
    assert res["templates"] == ["a photo of a {}, a type of pet."]
    from anchoropt.plugins import load_plugins

    load_plugins()
    cfg = build_config(
        pets.config_file,
        opts=[
            "DATASET.ROOT",
            str(pets.root),
            "TRAINER.NAME",
            "ZeroshotCLIP2",
            "OUTPUT_DIR",
            str(tmp_path / "zs2"),
            "MODEL.BACKBONE.PATH",
            str(tiny_clip_state_dict_file),
            "INPUT.SIZE",
            "(32, 32)",
            "DATALOADER.NUM_WORKERS",
            "0",
            "TRAINER.COOP.PREC",
            "fp32",
        ],
    )
    trainer = build_trainer(cfg)
    assert len(trainer.templates) == 8
    with torch.no_grad():
        names = [c.replace("_", " ") for c in trainer.classnames]
        per_template = [
            tiny_clip.encode_text(clip.tokenize([t.format(n) for n in names])).float() for t in trainer.templates
        ]
        want = torch.stack([f / f.norm(dim=-1, keepdim=True) for f in per_template]).mean(0)
        want = want / want.norm(dim=-1, keepdim=True)
    assert torch.allclose(trainer.text_features, want, atol=1e-5)
