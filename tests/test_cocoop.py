"""CoCoOp and CoCoOp + AnchorOPT: meta-net, batched per-image prompts, shared Stage II trainer, configs, runs."""

import json

import pytest
import torch
import torch.nn.functional as F

import trainers  # noqa: F401  (registers the trainers and their config nodes)
from anchoropt.config import build_config
from anchoropt.method.anchor_checkpoint import load_anchor
from anchoropt.method.positions import order_matrix
from anchoropt.models.clip_parts import normalize
from anchoropt.models.cocoop import CoCoOpCLIP, CoCoOpPromptLearner, encode_per_image_prompts
from anchoropt.models.cocoop_anchoropt import CoCoOpAnchorOPTCLIP, CoCoOpAnchorOPTPromptLearner
from anchoropt.prompts.layout import encode_words, sot_token_id
from tests.support.anchoropt_runs import make_env_with_anchor, read_results, record_method, run_train
from tests.support.clip_fixtures import tiny_clip, tiny_clip_dir, tiny_clip_state_dict_file  # noqa: F401
from tests.support.data_layouts import REPO
from tests.support.variant_runs import (
    eval_args,
    evaluation_logits,
    mean_training_loss,
    reloaded_trainer,
    run_watched,
    stage2_training_loss,
)
from trainers.anchoropt_stage2 import StageIISettings

pytestmark = pytest.mark.filterwarnings("ignore:description file .* fewer than")

CLASSES = ["cat", "golden_retriever", "sea lion"]


def images(count=3, seed=0):
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def randomize_meta_net_(learner, seed=1):
    """Give the meta-net a visible, image-dependent output (the tiny CLIP's hidden layer has 2 units)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in learner.meta_net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
        learner.meta_net.linear1.bias.abs_().add_(1.0)  # keep the ReLU open
    return learner


def cocoop(clip_model, ctx_init="a photo of a", n_ctx=4):
    torch.manual_seed(0)
    return CoCoOpCLIP(clip_model, randomize_meta_net_(CoCoOpPromptLearner(clip_model, CLASSES, n_ctx, ctx_init)))


def cocoop_anchoropt(clip_model, mode="learned", n_ctx=4, anchor_len=1):
    torch.manual_seed(0)
    anchor = torch.randn(anchor_len, clip_model.token_embedding.weight.shape[1])
    learner = CoCoOpAnchorOPTPromptLearner(
        clip_model, CLASSES, n_ctx=n_ctx, anchor_len=anchor_len, anchor=anchor, position_mode=mode
    )
    return CoCoOpAnchorOPTCLIP(clip_model, randomize_meta_net_(learner))


def full_length_text_features(clip_model, embeds, eot):
    """Reference: CLIP's own text tower over all 77 positions (prompts padded with token 0), normalised."""
    n, length, width = embeds.shape
    pad = clip_model.token_embedding(torch.zeros(n, 77 - length, dtype=torch.long))
    x = torch.cat([embeds, pad], dim=1) + clip_model.positional_embedding
    x = clip_model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    x = clip_model.ln_final(x)[torch.arange(n), eot] @ clip_model.text_projection
    return F.normalize(x, dim=-1)


# ---------------------------------------------------------------- CoCoOp model


def test_meta_net_widths_come_from_the_clip(tiny_clip):  # noqa: F811
    learner = CoCoOpPromptLearner(tiny_clip, CLASSES, 4, "")
    embed_dim, text_width = tiny_clip.visual.output_dim, tiny_clip.token_embedding.weight.shape[1]
    net = learner.meta_net
    assert (net.linear1.in_features, net.linear1.out_features) == (embed_dim, embed_dim // 16)
    assert isinstance(net.relu, torch.nn.ReLU)
    assert (net.linear2.in_features, net.linear2.out_features) == (embed_dim // 16, text_width)
    assert set(learner.state_dict()) == {
        "ctx",
        "meta_net.linear1.weight",
        "meta_net.linear1.bias",
        "meta_net.linear2.weight",
        "meta_net.linear2.bias",
    }


def test_every_context_token_gets_the_same_image_bias(tiny_clip):  # noqa: F811
    model = cocoop(tiny_clip)
    learner = model.prompt_learner
    assert learner.ctx.shape[0] == len(encode_words("a photo of a"))
    with torch.no_grad():
        features = model.image_encoder(images())
        embeds, eot = learner(features)
        bias = learner.meta_net(features)
    table = tiny_clip.token_embedding.weight
    for b in range(3):
        for c, name in enumerate(CLASSES):
            torch.testing.assert_close(embeds[b, c, 1:5], learner.ctx + bias[b])
            torch.testing.assert_close(
                embeds[b, c, 5 : eot[c] + 1], embeds[0, c, 5 : eot[c] + 1]
            )  # class, ".", EOT fixed
        assert not torch.allclose(bias[b], bias[(b + 1) % 3])
    assert torch.equal(embeds[0, 0, 0], table[sot_token_id()])


def test_batched_per_image_prompts_match_clip_s_full_length_text_tower(tiny_clip):  # noqa: F811
    model = cocoop(tiny_clip).eval()
    image = images()
    with torch.no_grad():
        logits = model(image)
        features = model.image_encoder(image)
        embeds, eot = model.prompt_learner(features)
        scale = tiny_clip.logit_scale.exp()
        for b in range(3):
            text = full_length_text_features(tiny_clip, embeds[b], eot)
            torch.testing.assert_close(logits[b], scale * text @ features[b], rtol=0, atol=1e-4)
    assert model.prompt_learner.layout.length < 77  # the batched pass ran truncated


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_batch_of_b_gives_the_logits_of_b_single_image_passes(tiny_clip, mode):  # noqa: F811
    model = cocoop(tiny_clip).train(mode == "train")
    image = images(5)
    with torch.no_grad():
        together = model(image)
        alone = torch.cat([model(image[b : b + 1]) for b in range(5)])
        model.max_text_sequences = len(CLASSES) * 2  # chunks of two images (and a last one)
        chunked = model(image)
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(chunked, alone, rtol=0, atol=1e-5)


def test_chunks_hold_whole_images():
    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.sizes = []

        def forward(self, embeds, eot, length):
            self.sizes.append(embeds.shape[0])
            return embeds[:, 0, :].clone()

    recorder = Recorder()
    embeds = torch.randn(5, 3, 4, 6)
    out = encode_per_image_prompts(recorder, embeds, torch.tensor([1, 2, 3]), 4, max_sequences=7)
    assert recorder.sizes == [6, 6, 3]
    torch.testing.assert_close(out, normalize(embeds[:, :, 0, :]))


def test_gradients_reach_context_and_meta_net_only(tiny_clip):  # noqa: F811
    model = cocoop(tiny_clip)
    F.cross_entropy(model(images()), torch.tensor([0, 1, 2])).backward()
    learner = model.prompt_learner
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.parameters())
    assert all(p.grad is None for p in tiny_clip.parameters())
    learner.zero_grad()


# ---------------------------------------------------------------- CoCoOp + AnchorOPT model


def test_anchoropt_prompt_is_p_times_shifted_v_and_a(tiny_clip):  # noqa: F811
    model = cocoop_anchoropt(tiny_clip, n_ctx=3).eval()
    learner = model.prompt_learner
    with torch.no_grad():
        features = model.image_encoder(images())
        bias = learner.meta_net(features)
        matrix = order_matrix([3, 0, 2, 1])  # slots: A, V1, V3, V2
        embeds, readout = learner.image_prompts(features, matrix)
    assert torch.equal(readout, learner.layout.eot_index)
    for b in range(3):
        shifted = learner.ctx + bias[b]
        expected = torch.stack([learner.anchor[0], shifted[0], shifted[2], shifted[1]])
        for c in range(len(CLASSES)):
            torch.testing.assert_close(embeds[b, c, 1:5], expected)  # the bias shifts V, never the anchor


def test_one_position_sample_per_step_for_the_whole_batch(tiny_clip):  # noqa: F811
    model = cocoop_anchoropt(tiny_clip).train()
    learner = model.prompt_learner
    with torch.no_grad():
        features = model.image_encoder(images())
        shifted = learner.image_context(features)
        orders = set()
        for _ in range(8):
            embeds, _ = learner.image_prompts(features)
            per_image = []
            for b in range(3):
                sources = torch.cat([shifted[b], learner.anchor])
                slots = embeds[b, 0, 1:6]
                per_image.append(tuple(int((sources - slot).abs().sum(-1).argmin()) for slot in slots))
            assert len(set(per_image)) == 1
            orders.add(per_image[0])
    assert len(orders) > 1  # a fresh sample per call


def test_anchoropt_gradients_reach_theta_v_and_meta_net(tiny_clip):  # noqa: F811
    model = cocoop_anchoropt(tiny_clip)
    normal, anchor = model.branch_logits(images(), anchor_text=model.anchor_text_features())
    assert not anchor.requires_grad
    F.cross_entropy(normal, torch.tensor([0, 1, 2])).backward()
    grads = {name: p.grad for name, p in model.prompt_learner.named_parameters()}
    assert set(grads) == {
        "ctx",
        "positions.logits",
        "meta_net.linear1.weight",
        "meta_net.linear1.bias",
        "meta_net.linear2.weight",
        "meta_net.linear2.bias",
    }
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())
    assert all(p.grad is None for p in tiny_clip.parameters())
    model.prompt_learner.zero_grad()


def test_anchoropt_batch_matches_single_images_and_eval_is_deterministic(tiny_clip):  # noqa: F811
    model = cocoop_anchoropt(tiny_clip).eval()
    image = images(4)
    with torch.no_grad():
        anchor_text = model.anchor_text_features()
        normal, anchor = model.branch_logits(image, anchor_text=anchor_text)
        for b in range(4):
            one, one_anchor = model.branch_logits(image[b : b + 1], model.prompt_state(), anchor_text)
            torch.testing.assert_close(one[0], normal[b], rtol=0, atol=1e-5)
            torch.testing.assert_close(one_anchor[0], anchor[b], rtol=0, atol=1e-5)
        again, _ = model.branch_logits(image)
    assert torch.equal(again, normal)
    assert CoCoOpAnchorOPTCLIP.PROMPTS_FIXED_IN_EVAL is False


# ---------------------------------------------------------------- configs

COCOOP_ANCHOROPT = {  # N_CTX / epochs / CE weight / KD weight / KD temperature (CoCoOp+AnchorOPT column)
    "imagenet": (4, 10, 100, 100, 4),
    "caltech101": (4, 20, 10, 1000, 4),
    "oxford_pets": (4, 20, 10, 100, 2),
    "stanford_cars": (4, 20, 100, 100, 4),
    "oxford_flowers": (4, 20, 10, 100, 4),
    "food101": (4, 20, 10, 100, 4),
    "fgvc_aircraft": (4, 20, 10, 100, 0.5),
    "sun397": (8, 10, 10, 1000, 2),
    "dtd": (4, 20, 10, 100, 4),
    "eurosat": (4, 20, 100, 100, 0.5),
    "ucf101": (4, 20, 10, 100, 0.1),
}
CONFIGS = REPO / "configs" / "trainers"


@pytest.mark.parametrize("stem", sorted(COCOOP_ANCHOROPT))
def test_cocoop_anchoropt_configs_hold_the_published_settings(stem):
    cfg = build_config(
        str(REPO / "configs" / "datasets" / f"{stem}.yaml"),
        [
            str(CONFIGS / "CoCoOp_AnchorOPT" / "vit_b16.yaml"),
            str(CONFIGS / "CoCoOp_AnchorOPT" / "base2new" / f"{stem}.yaml"),
        ],
    )
    a = cfg.TRAINER.ANCHOROPT
    assert (a.N_CTX, cfg.OPTIM.MAX_EPOCH, a.PROMPT_CE_WEIGHT, a.KD_WEIGHT, a.KD_TEMPERATURE) == COCOOP_ANCHOROPT[stem]
    assert (
        cfg.OPTIM.NAME,
        cfg.OPTIM.LR,
        cfg.DATALOADER.TRAIN_X.BATCH_SIZE,
        a.ANCHOR_LEN,
        a.GUMBEL_TEMP,
        a.CTX_INIT,
        cfg.OPTIM.WARMUP_EPOCH,
        cfg.OPTIM.WARMUP_CONS_LR,
        cfg.TRAINER.COCOOP.PREC,
    ) == ("sgd", 0.002, 1, 1, 1.0, "", 1, 1e-5, "fp16")
    StageIISettings.from_cfg(cfg)


def test_cocoop_config_is_the_published_ctxv1_setting():
    cfg = build_config("", [str(CONFIGS / "CoCoOp" / "vit_b16_c4_ep10_batch1_ctxv1.yaml")])
    c = cfg.TRAINER.COCOOP
    assert (c.N_CTX, c.CTX_INIT, c.PREC) == (4, "a photo of a", "fp16")
    assert (cfg.DATALOADER.TRAIN_X.BATCH_SIZE, cfg.OPTIM.MAX_EPOCH, cfg.OPTIM.LR, cfg.OPTIM.LR_SCHEDULER) == (
        1,
        10,
        0.002,
        "cosine",
    )
    for n_ctx in (4, 8, 16):
        other = build_config("", [str(CONFIGS / "CoCoOp" / f"vit_b16_c{n_ctx}_ep10_batch1.yaml")])
        assert (other.TRAINER.COCOOP.N_CTX, other.TRAINER.COCOOP.CTX_INIT) == (n_ctx, "")


# ---------------------------------------------------------------- through train.py

EPOCHS = 4


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_clip_state_dict_file):  # noqa: F811
    return make_env_with_anchor(tmp_path_factory.mktemp("cocoop"), tiny_clip_state_dict_file)


COCOOP_OPTS = ("TRAINER.COCOOP.PREC", "fp32", "TRAINER.COCOOP.N_CTX", "4", "TRAINER.COCOOP.CTX_INIT", "a photo of a")


@pytest.fixture(scope="module")
def cocoop_run(env):
    return run_watched(env, "CoCoOp", env.root / "cocoop", *COCOOP_OPTS, epochs=EPOCHS)


@pytest.fixture(scope="module")
def anchoropt_run(env):
    return run_watched(
        env,
        "CoCoOp_AnchorOPT",
        env.root / "cocoop_anchoropt",
        "TRAINER.COCOOP.PREC",
        "fp32",
        "TRAINER.ANCHOROPT.ANCHOR_PATH",
        str(env.stage1),
        "TRAINER.ANCHOROPT.N_CTX",
        "2",
        "TRAINER.ANCHOROPT.PROMPT_CE_WEIGHT",
        "1.0",
        "TRAINER.ANCHOROPT.KD_WEIGHT",
        "1.0",
        epochs=EPOCHS,
    )


def cross_entropy_loss(trainer, image, label):
    return F.cross_entropy(trainer.model(image), label)


def test_cocoop_trains_context_and_meta_net_and_leaves_clip_alone(env, cocoop_run):
    assert (
        cocoop_run.changed
        == set(cocoop_run.initial)
        == {
            "ctx",
            "meta_net.linear1.weight",
            "meta_net.linear1.bias",
            "meta_net.linear2.weight",
            "meta_net.linear2.bias",
        }
    )
    assert cocoop_run.frozen_changed == set() and len(cocoop_run.frozen_before) > 10
    trainer = reloaded_trainer(env, cocoop_run, "CoCoOp", *COCOOP_OPTS)
    before = mean_training_loss(trainer, cocoop_run.initial, cross_entropy_loss)
    after = mean_training_loss(trainer, cocoop_run.final, cross_entropy_loss)
    assert after < before - 0.01
    base = read_results(cocoop_run.out)
    assert (base["trainer"], base["num_classes"]) == ("CoCoOp", len(env.base_classes))
    assert base["num_samples"] == len(env.base_classes) * env.dataset.per_class["test"]


def test_cocoop_evaluates_new_classes_encoding_prompts_per_batch(env, cocoop_run):
    with pytest.MonkeyPatch.context() as mp:
        calls = record_method(mp, CoCoOpCLIP, "forward", lambda m, out, image: image.shape[0])
        run_train(eval_args(env, cocoop_run, "CoCoOp", env.root / "cocoop_new", *COCOOP_OPTS))
    new = read_results(env.root / "cocoop_new")
    assert (new["num_classes"], new["num_samples"]) == (len(env.new_classes), sum(calls))
    assert len(calls) > 1  # one text pass per test batch: the prompts depend on the image


def test_cocoop_checkpoint_reload_gives_the_trained_logits(env, cocoop_run):
    trainer = reloaded_trainer(env, cocoop_run, "CoCoOp", *COCOOP_OPTS)
    torch.testing.assert_close(evaluation_logits(trainer, cocoop_run.images), cocoop_run.trained_logits)


def test_cocoop_anchoropt_trains_theta_v_and_meta_net_but_not_the_anchor(env, anchoropt_run):
    run = anchoropt_run
    assert run.changed == set(run.initial) - {"anchor"}
    assert {"ctx", "positions.logits", "meta_net.linear1.weight", "meta_net.linear2.weight"} <= run.changed
    assert torch.equal(run.final["anchor"], load_anchor(env.stage1).anchor)
    assert run.frozen_changed == set()
    trainer = reloaded_trainer(
        env,
        run,
        "CoCoOp_AnchorOPT",
        "TRAINER.COCOOP.PREC",
        "fp32",
        "TRAINER.ANCHOROPT.N_CTX",
        "2",
        "TRAINER.ANCHOROPT.KD_WEIGHT",
        "1.0",
    )
    before = mean_training_loss(trainer, run.initial, stage2_training_loss)
    after = mean_training_loss(trainer, run.final, stage2_training_loss)
    assert after < before - 0.01
    assert any(step["kd"] > 0 for step in run.steps)
    assert run.checkpoint["anchoropt"]["trained_classnames"] == env.base_classes
    torch.testing.assert_close(evaluation_logits(trainer, run.images), run.trained_logits)


def test_cocoop_anchoropt_scores_base_with_the_prompt_and_new_with_the_ensemble(env, anchoropt_run):
    base = read_results(anchoropt_run.out)
    assert base["scoring"]["normal_classes"] == len(env.base_classes) and base["scoring"]["ensemble_classes"] == 0
    with pytest.MonkeyPatch.context() as mp:
        anchor_calls = record_method(mp, CoCoOpAnchorOPTCLIP, "anchor_text_features", lambda m, _: 1)
        run_train(
            eval_args(
                env,
                anchoropt_run,
                "CoCoOp_AnchorOPT",
                env.root / "cocoop_anchoropt_new",
                "TRAINER.COCOOP.PREC",
                "fp32",
                "TRAINER.ANCHOROPT.N_CTX",
                "2",
            )
        )
    new = read_results(env.root / "cocoop_anchoropt_new")
    assert new["scoring"]["ensemble_classes"] == len(env.new_classes) and new["scoring"]["normal_classes"] == 0
    assert len(anchor_calls) == 1  # the anchor branch: once for the whole evaluation
    history = [json.loads(line) for line in (anchoropt_run.out / "train_history.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in history] == list(range(1, EPOCHS + 1))
    assert (anchoropt_run.out / "positions.txt").is_file()


def test_cocoop_anchoropt_mixed_classes_follow_the_per_class_rule(env, anchoropt_run):
    trainer = reloaded_trainer(
        env,
        anchoropt_run,
        "CoCoOp_AnchorOPT",
        "TRAINER.COCOOP.PREC",
        "fp32",
        "TRAINER.ANCHOROPT.N_CTX",
        "2",
        "TRAINER.ANCHOROPT.SCORING_MODE",
        "per_class",  # the default scores a mixed set with the ensemble throughout
        subsample="all",
    )
    image = next(iter(trainer.test_loader))["img"]
    logits = evaluation_logits(trainer, image)
    model = trainer.model
    with torch.no_grad():
        normal, anchor = model.branch_logits(image, anchor_text=normalize(model.anchor_text_features()))
    for column, name in enumerate(trainer.classnames):
        expected = normal[:, column] if name in env.base_classes else (normal[:, column] + anchor[:, column]) / 2
        torch.testing.assert_close(logits[:, column], expected, rtol=0, atol=1e-5)
