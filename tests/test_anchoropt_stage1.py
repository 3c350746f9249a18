"""AnchorOPT Stage I: the anchor learned from class descriptions, through train.py with the tiny CLIP."""

import copy
import math
import warnings

import pytest
import torch
import yaml

from anchoropt.backbone import TextEncoder
from anchoropt.config import build_config
from anchoropt.engine import TRAINER_REGISTRY, load_checkpoint
from anchoropt.engine.builtin.data.manager import DatasetWrapper
from anchoropt.errors import CheckpointError, ConfigError, DataError
from anchoropt.method.anchor_checkpoint import load_anchor, save_anchor
from anchoropt.method.anchor_tokens import nearest_vocabulary_tokens, token_text
from anchoropt.method.descriptions import encode_descriptions, load_descriptions
from anchoropt.method.losses import description_mse
from anchoropt.models.anchor_prompt import AnchorPromptLearner
from anchoropt.models.clip_parts import ImageEncoder
from anchoropt.models.coop import PromptedCLIP
from anchoropt.prompts.layout import clip_tokenizer, encode_words
from tests.support.anchoropt_runs import (
    build_trainer_from_args,
    make_tiny_env,
    read_results,
    record_method,
    run_train,
    write_descriptions,
)
from tests.support.clip_fixtures import tiny_clip, tiny_clip_dir, tiny_clip_state_dict_file  # noqa: F401
from tests.support.data_layouts import REPO
from tests.support.method_fixtures import ShellPayload, write_malicious_checkpoint, write_official_checkpoint
from trainers.anchoropt_stage1 import AnchorOPT_StageI

pytestmark = pytest.mark.filterwarnings("ignore:description file .* fewer than")

EPOCHS = 3
SCHEDULE = (
    "OPTIM.MAX_EPOCH",
    str(EPOCHS),
    "OPTIM.WARMUP_EPOCH",
    "1",
    "OPTIM.WARMUP_TYPE",
    "constant",
    "OPTIM.WARMUP_CONS_LR",
    "0.0001",
    "OPTIM.LR_SCHEDULER",
    "cosine",
)


def _step_record(trainer, result, loss):
    return {"epoch": trainer.epoch, "batch": trainer.batch_idx, "lr": trainer.get_current_lr(), "loss": float(loss)}


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_clip_state_dict_file):  # noqa: F811
    env = make_tiny_env(tmp_path_factory.mktemp("stage1"), tiny_clip_state_dict_file)
    short = env.base_classes[1]  # one class with fewer sentences than asked: a warning, not an error
    write_descriptions(env.descriptions, env.dataset.classnames, short={short: 2})
    return env


@pytest.fixture(scope="module")
def stage1(env):
    """Stage I with the image term off (the default), watched: steps, images touched, description encodings."""
    out = env.root / "stage1_mse"
    with pytest.MonkeyPatch.context() as mp:
        steps = record_method(mp, AnchorOPT_StageI, "optimize", _step_record)
        images = record_method(mp, ImageEncoder, "forward", lambda *a: 1)
        items = record_method(mp, DatasetWrapper, "__getitem__", lambda *a: 1)
        encodings = record_method(mp, TextEncoder, "encode_texts", lambda self, result, texts: len(texts))
        initial = record_method(mp, AnchorOPT_StageI, "before_train", lambda self, _: self.anchor.detach().clone())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_train(env.args("AnchorOPT_StageI", out, *SCHEDULE, "TEST.NO_TEST", "True"))
    return {
        "out": out,
        "steps": steps,
        "images": len(images),
        "items": len(items),
        "encodings": encodings,
        "initial_anchor": initial[0],
        "warnings": [str(w.message) for w in caught],
    }


@pytest.fixture(scope="module")
def stage1_with_images(env):
    """The reference schedule: the same run with an image term, so every step comes from the loader."""
    out = env.root / "stage1_ce"
    with pytest.MonkeyPatch.context() as mp:
        steps = record_method(mp, AnchorOPT_StageI, "optimize", _step_record)
        images = record_method(mp, ImageEncoder, "forward", lambda *a: 1)
        run_train(
            env.args(
                "AnchorOPT_StageI", out, *SCHEDULE, "TEST.NO_TEST", "True", "TRAINER.ANCHOROPT.ANCHOR_CE_WEIGHT", "1.0"
            )
        )
    return {"out": out, "steps": steps, "images": len(images)}


# ---------------------------------------------------------------- training without images


def test_without_image_term_no_image_is_loaded_or_encoded(stage1):
    assert stage1["steps"], "no optimizer step was taken"
    assert stage1["images"] == 0
    assert stage1["items"] == 0


def test_steps_and_learning_rates_equal_a_run_over_the_loader(env, stage1, stage1_with_images):
    assert stage1_with_images["images"] == len(stage1_with_images["steps"])  # the reference did read images
    per_epoch = math.ceil(len(env.base_classes) * env.num_shots / env.batch_size)
    expected_positions = [(e, b) for e in range(EPOCHS) for b in range(per_epoch)]
    schedule = [(s["epoch"], s["batch"], s["lr"]) for s in stage1["steps"]]
    reference = [(s["epoch"], s["batch"], s["lr"]) for s in stage1_with_images["steps"]]
    assert [(e, b) for e, b, _ in schedule] == expected_positions
    assert schedule == reference
    lrs = [lr for _, _, lr in schedule]
    assert lrs[:per_epoch] == [pytest.approx(1e-4)] * per_epoch  # constant warm-up epoch
    assert lrs[per_epoch] > lrs[0] and lrs[-1] < lrs[per_epoch]  # then the cosine schedule


def test_descriptions_are_encoded_once_without_graph_and_short_lists_warn(env, stage1):
    per_class = [3 if name != env.base_classes[1] else 2 for name in env.base_classes]
    assert stage1["encodings"] == [sum(per_class)]  # one call, base classes only, MAX_TEMPLATE_LENGTH 3
    assert any("fewer than 3 sentences" in w and env.base_classes[1] in w for w in stage1["warnings"])


def test_loss_falls_and_anchor_prompt_moves_toward_descriptions(env, stage1, tiny_clip):  # noqa: F811
    losses = [s["loss"] for s in stage1["steps"]]
    per_epoch = len(losses) // EPOCHS
    assert sum(losses[-per_epoch:]) < sum(losses[:per_epoch])

    clip_model = copy.deepcopy(tiny_clip)
    descriptions = load_descriptions(env.descriptions, env.base_classes, 3)
    targets = encode_descriptions(TextEncoder(clip_model), descriptions)
    model = PromptedCLIP(clip_model, AnchorPromptLearner(clip_model, env.base_classes, 1))

    def mse(anchor):
        model.prompt_learner.set_anchor(anchor)
        with torch.no_grad():
            return float(description_mse(model.text_features(), targets))

    trained = load_anchor(stage1["out"]).anchor
    assert mse(trained) < 0.9 * mse(stage1["initial_anchor"])


# ---------------------------------------------------------------- the anchor file and checkpoints


def test_anchor_file_round_trips_with_classes_and_settings(env, stage1):
    record = load_anchor(stage1["out"], expected_width=64, expected_len=1)  # the directory resolves to anchor.pth
    assert record.path == stage1["out"] / "anchor.pth"
    last = load_checkpoint(str(stage1["out"] / "anchor_prompt_learner" / f"model.pth.tar-{EPOCHS}"))
    assert torch.equal(record.anchor, last["state_dict"]["anchor_ctx_1"].float())
    assert not torch.equal(record.anchor, stage1["initial_anchor"])
    assert record.classnames == env.base_classes
    assert last["anchoropt"]["trained_classnames"] == env.base_classes
    assert record.settings["mse_weight"] == 1000.0 and record.settings["ce_weight"] == 0.0
    assert record.settings["max_template_length"] == 3 and record.settings["subsample_classes"] == "base"


def test_eval_only_is_anchor_zero_shot_and_deterministic(env, stage1):
    outputs = []
    for trainer, out in (
        ("AnchorOPT_StageI", "eval_a"),
        ("AnchorOPT_StageI", "eval_b"),
        ("CoOp_Pretrain_Anchor", "eval_c"),
    ):
        run_train(
            env.args(trainer, env.root / out, subsample="new", flags=("--eval-only", "--model-dir", str(stage1["out"])))
        )
        outputs.append(read_results(env.root / out))
    first = outputs[0]
    assert first["num_classes"] == len(env.new_classes)
    assert first["scoring"] == {
        "mode": "anchor",
        "rule": "anchor",
        "num_classes": len(env.new_classes),
        "anchor_classes": len(env.new_classes),
    }
    assert first["anchor"]["source"] == str(stage1["out"] / "anchor.pth")
    assert first["anchor"]["trained_classes"] == len(env.base_classes)
    assert [o["metrics"] for o in outputs[1:]] == [first["metrics"]] * 2
    assert outputs[2]["trainer"] == "CoOp_Pretrain_Anchor"


def test_eval_of_an_epoch_checkpoint_restores_trained_classes(env, stage1):
    out = env.root / "eval_epoch"
    run_train(
        env.args(
            "AnchorOPT_StageI",
            out,
            flags=("--eval-only", "--model-dir", str(stage1["out"]), "--load-epoch", str(EPOCHS)),
        )
    )
    assert read_results(out)["anchor"]["trained_classes"] == len(env.base_classes)
    assert read_results(out)["anchor"]["source"] == "checkpoint"


def test_released_anchor_format_evaluates_like_the_same_anchor_in_our_format(env, stage1):
    anchor = load_anchor(stage1["out"]).anchor.half().float()  # released files hold fp16 values
    released = env.root / "released" / "OxfordPets"
    write_official_checkpoint(
        released / "anchor_prompt_learner" / "model.pth.tar", anchor, pickle_scheduler_object=True
    )
    ours = save_anchor(env.root / "ours" / "anchor.pth", anchor, env.base_classes, {})
    results = []
    for name, model_dir in (("eval_released", released), ("eval_ours", ours.parent)):
        run_train(env.args("AnchorOPT_StageI", env.root / name, flags=("--eval-only", "--model-dir", str(model_dir))))
        results.append(read_results(env.root / name))
    assert results[0]["anchor"]["source"].endswith("anchor_prompt_learner/model.pth.tar")
    assert results[0]["metrics"] == results[1]["metrics"]
    assert results[0]["anchor"]["nearest_tokens"] == results[1]["anchor"]["nearest_tokens"]


def test_malicious_anchor_file_is_refused_without_running_it(env, tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "evil"
    write_malicious_checkpoint(
        folder / "anchor_prompt_learner" / "model.pth.tar", ShellPayload(marker), torch.randn(1, 64)
    )
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        run_train(env.args("AnchorOPT_StageI", tmp_path / "out", flags=("--eval-only", "--model-dir", str(folder))))
    assert not marker.exists()


# ---------------------------------------------------------------- configuration errors


def test_missing_class_in_descriptions_is_named_with_close_matches(env, tmp_path):
    missing = env.base_classes[0]
    partial = write_descriptions(tmp_path / "partial.json", [c for c in env.dataset.classnames if c != missing])
    args = env.args(
        "AnchorOPT_StageI", tmp_path / "out", "OPTIM.MAX_EPOCH", "1", "TRAINER.ANCHOROPT.DESCRIPTIONS", str(partial)
    )
    with pytest.raises(DataError, match=rf"no entry for 1 of 3 classes: '{missing}'"):
        run_train(args)


def test_nothing_to_learn_is_a_config_error(env, tmp_path):
    args = env.args("AnchorOPT_StageI", tmp_path / "out", "TRAINER.ANCHOROPT.ANCHOR_MSE_WEIGHT", "0.0")
    with pytest.raises(ConfigError, match="ANCHOR_MSE_WEIGHT and ANCHOR_CE_WEIGHT are both 0"):
        build_trainer_from_args(args)


def test_official_trainer_name_is_the_same_trainer():
    assert issubclass(TRAINER_REGISTRY.get("CoOp_Pretrain_Anchor"), AnchorOPT_StageI)


# ---------------------------------------------------------------- library pieces


def test_description_mse_is_the_official_mse_for_equal_counts_and_handles_ragged_lists():
    anchor_features = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    described = torch.nn.functional.normalize(torch.randn(3, 4, 8), dim=-1)
    from anchoropt.method.descriptions import DescriptionFeatures

    flat = DescriptionFeatures(described.reshape(12, 8), torch.arange(3).repeat_interleave(4), [4, 4, 4])
    official = torch.nn.MSELoss()(anchor_features.unsqueeze(1).repeat(1, 4, 1), described)
    assert description_mse(anchor_features, flat) == pytest.approx(float(official), rel=1e-6)
    ragged = DescriptionFeatures(described[:, :2].reshape(6, 8)[:5], torch.tensor([0, 0, 1, 1, 2]), [2, 2, 1])
    by_hand = ((anchor_features[[0, 0, 1, 1, 2]] - described[:, :2].reshape(6, 8)[:5]) ** 2).mean()
    assert description_mse(anchor_features, ragged) == pytest.approx(float(by_hand), rel=1e-6)


def test_nearest_tokens_find_the_word_an_anchor_was_set_to(tiny_clip):  # noqa: F811
    table = tiny_clip.token_embedding.weight
    dog, pho = encode_words("dog")[0], encode_words("photography")[0]
    anchor = torch.stack([table[dog], table[pho] * 3])  # the scale does not change the cosine ranking
    nearest = nearest_vocabulary_tokens(anchor, table, top_k=3)
    assert nearest[0][0].token_id == dog and nearest[0][0].text == "dog"
    assert nearest[0][0].cosine == pytest.approx(1.0, abs=1e-5) and nearest[0][0].distance == pytest.approx(
        0.0, abs=1e-5
    )
    assert nearest[1][0].token_id == pho and nearest[1][0].distance > 0
    assert [len(row) for row in nearest] == [3, 3]
    assert token_text(clip_tokenizer().encoder["th"]) == "th-"  # a word piece, not a word end


def test_image_term_value_gradient_and_one_image_pass_per_step(env, tmp_path):
    """ANCHOR_CE_WEIGHT > 0: loss = w_mse·MSE + w_ce·CE(s·f_I(x)·zᵀ, y), each image encoded once, one CLIP."""
    w_mse, w_ce = 1000.0, 0.5
    args = env.args(
        "AnchorOPT_StageI", tmp_path / "ce", "TRAINER.ANCHOROPT.ANCHOR_CE_WEIGHT", str(w_ce), "INPUT.TRANSFORMS", "()"
    )
    trainer = build_trainer_from_args(args)
    assert sum(type(m).__name__ == "VisionTransformer" for m in trainer.model.modules()) == 1  # no second CLIP
    trainer.encode_class_descriptions()
    batch = next(iter(trainer.train_loader_x))
    image, label = batch["img"], batch["label"]
    anchor = trainer.model.prompt_learner.anchor_ctx_1
    # the expected loss, with the image features from CLIP's own forward
    text = trainer.model.text_features()
    visual = trainer.model.image_encoder.visual
    with torch.no_grad():
        image_features = torch.nn.functional.normalize(visual(image).float(), dim=-1)
    logits = trainer.model.logit_scale.exp() * image_features @ text.t()
    ce = torch.nn.functional.cross_entropy(logits, label)
    expected = w_mse * description_mse(text, trainer.description_features) + w_ce * ce
    (expected_grad,) = torch.autograd.grad(expected, anchor)
    trainer.batch_idx, trainer.num_batches, trainer.epoch = 0, 10, 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer, "model_update", lambda names=None: None)  # keep the gradient, skip the step
        encoded = record_method(mp, ImageEncoder, "forward", lambda self, out, images: images.shape[0])
        summary = trainer.forward_backward(batch)
    assert encoded == [image.shape[0]]  # every image of the batch once, in one pass
    assert summary["ce"] == pytest.approx(float(ce), rel=1e-5)
    assert summary["loss"] == pytest.approx(float(expected), rel=1e-5)
    torch.testing.assert_close(anchor.grad, expected_grad, rtol=1e-4, atol=1e-7)
    # the CE term changes the gradient (so a weight that were ignored would show)
    (mse_grad,) = torch.autograd.grad(
        w_mse * description_mse(trainer.model.text_features(), trainer.description_features), anchor
    )
    assert not torch.allclose(mse_grad, expected_grad, rtol=1e-3)


# ---------------------------------------------------------------- configs

# The released anchors' settings: dataset config stem: (epochs, MSE weight, descriptions per class, CE weight)
STAGE1_PUBLISHED = {
    "imagenet": (10, 1000, 5, 0),
    "caltech101": (100, 1000, 10, 1),
    "oxford_pets": (100, 1000, 10, 1),
    "stanford_cars": (40, 100, 10, 1),
    "oxford_flowers": (100, 1000, 10, 1),
    "food101": (20, 1000, 10, 1),
    "fgvc_aircraft": (20, 1000, 10, 1),
    "sun397": (20, 1000, 10, 1),
    "dtd": (100, 1000, 10, 1),
    "eurosat": (100, 1000, 10, 1),
    "ucf101": (100, 1000, 10, 1),
}
CONFIGS = REPO / "configs" / "trainers" / "AnchorOPT_StageI"


@pytest.mark.parametrize("stem", sorted(STAGE1_PUBLISHED))
def test_stage1_dataset_configs_merge_and_carry_the_published_numbers(stem):
    epochs, mse, per_class, ce = STAGE1_PUBLISHED[stem]
    assert (REPO / "configs" / "datasets" / f"{stem}.yaml").is_file()
    per_dataset = CONFIGS / "base2new" / f"{stem}.yaml"
    dataset = str(REPO / "configs" / "datasets" / f"{stem}.yaml")
    layers = [str(CONFIGS / "vit_b16.yaml"), str(per_dataset)]
    for recipe in ([], [str(CONFIGS / "released.yaml")]):  # the released recipe is the layers as they are
        cfg = build_config(dataset, layers + recipe)
        a = cfg.TRAINER.ANCHOROPT
        assert (cfg.OPTIM.MAX_EPOCH, a.ANCHOR_MSE_WEIGHT, a.MAX_TEMPLATE_LENGTH, a.ANCHOR_CE_WEIGHT) == (
            epochs,
            mse,
            per_class,
            ce,
        )
    assert yaml.safe_load(per_dataset.read_text()) == {
        "OPTIM": {"MAX_EPOCH": epochs},
        "TRAINER": {"ANCHOROPT": {"ANCHOR_MSE_WEIGHT": mse, "ANCHOR_CE_WEIGHT": ce, "MAX_TEMPLATE_LENGTH": per_class}},
    }
    # the paper's text and the public script: the same MSE-only settings on every dataset
    cfg = build_config(dataset, layers + [str(CONFIGS / "mse_only.yaml")])
    a = cfg.TRAINER.ANCHOROPT
    assert (cfg.OPTIM.MAX_EPOCH, a.ANCHOR_MSE_WEIGHT, a.MAX_TEMPLATE_LENGTH, a.ANCHOR_CE_WEIGHT) == (20, 1.0, 10, 0.0)


def test_stage1_shared_and_cross_dataset_configs():
    cfg = build_config(config_file=[str(CONFIGS / "vit_b16.yaml"), str(CONFIGS / "cross_dataset.yaml")])
    assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MOMENTUM, cfg.OPTIM.WEIGHT_DECAY) == ("sgd", 0.002, 0.9, 0.0005)
    assert (cfg.OPTIM.LR_SCHEDULER, cfg.OPTIM.WARMUP_EPOCH, cfg.OPTIM.WARMUP_TYPE, cfg.OPTIM.WARMUP_CONS_LR) == (
        "cosine",
        1,
        "constant",
        1e-5,
    )
    assert (cfg.DATALOADER.TRAIN_X.BATCH_SIZE, cfg.TRAINER.COOP.PREC, cfg.TRAINER.ANCHOROPT.ANCHOR_CE_WEIGHT) == (
        32,
        "fp16",
        0.0,
    )
    assert (
        cfg.OPTIM.MAX_EPOCH,
        cfg.TRAINER.ANCHOROPT.MAX_TEMPLATE_LENGTH,
        cfg.TRAINER.ANCHOROPT.ANCHOR_MSE_WEIGHT,
    ) == (10, 5, 1000.0)
