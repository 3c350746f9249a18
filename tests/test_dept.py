"""DePT and DePT + AnchorOPT: FiLM, head, loss, per-class fusion, checkpoints that keep every module, train.py runs."""

import math

import pytest
import torch
import torch.nn.functional as F

import trainers  # noqa: F401  (registers the trainers and their config nodes)
from anchoropt.config import build_config
from anchoropt.errors import CheckpointError, ConfigError
from anchoropt.method.anchor_checkpoint import load_anchor
from anchoropt.method.losses import dept_loss
from anchoropt.models.clip_parts import normalize, scaled_logits
from anchoropt.models.coop import CoOpPromptLearner, PromptedCLIP
from anchoropt.models.dept import DePTCLIP, DePTHead, DePTPromptLearner, DePTSettings, fuse_logits, head_columns
from tests.support.anchoropt_runs import make_env_with_anchor, read_results, run_train
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
E = 32  # the tiny CLIP's embedding width


def settings(**overrides):
    values = dict(head_type="linear", weight=0.7, test_time_fusion=True, film=True)
    values.update(overrides)
    return DePTSettings(**values)


def random_head(head_type="linear", classes=3, seed=0):
    head = DePTHead(E, classes, head_type)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return head


# ---------------------------------------------------------------- head, loss, fusion


def test_film_starts_as_the_identity_and_the_head_trains_on_text_and_image_samples():
    head = DePTHead(E, 3)
    x = torch.randn(4, E)
    assert torch.equal(head.film_image(x), x) and torch.equal(head.film_text(x), x)
    head = random_head()
    image, text, labels = torch.randn(2, E), torch.randn(3, E), torch.tensor([2, 0])
    logits, head_labels = head.training_logits(image, text, labels, torch.tensor(0.0))
    film_i = image * head.film_image.scale + head.film_image.bias
    film_t = text * head.film_text.scale + head.film_text.bias
    expected = torch.cat([film_t[labels], film_i]) @ head.linear.weight.t() + head.linear.bias
    torch.testing.assert_close(logits, expected)
    assert head_labels.tolist() == [2, 0, 2, 0]


def test_similarity_head_scores_filmed_features_by_cosine():
    head = random_head("similarity")
    assert head.linear is None
    image, text, scale = torch.randn(2, E), torch.randn(3, E), torch.tensor(math.log(10.0))
    film_i = image * head.film_image.scale + head.film_image.bias
    film_t = text * head.film_text.scale + head.film_text.bias
    expected = 10.0 * F.normalize(film_i, dim=-1) @ F.normalize(film_t, dim=-1).t()
    logits, labels = head.training_logits(image, text, torch.tensor([1, 2]), scale)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(head.class_logits(image, text, torch.tensor([0, -1, 1]), scale), expected)


def test_dept_loss_is_the_weighted_sum_of_both_cross_entropies():
    sim, labels = torch.randn(2, 3), torch.tensor([0, 2])
    head, head_labels = torch.randn(4, 3), torch.tensor([0, 2, 0, 2])
    loss, parts = dept_loss(sim, labels, head, head_labels, 0.7)
    expected = 0.3 * F.cross_entropy(sim, labels) + 0.7 * F.cross_entropy(head, head_labels)
    torch.testing.assert_close(loss, expected)
    assert set(parts) == {"ce", "head"}


def test_head_rows_are_matched_to_classes_by_name():
    columns = head_columns(["Sea lion", "dog", "cat"], ["cat", "golden_retriever", "sea_lion"])
    assert columns.tolist() == [2, -1, 0]
    assert head_columns(["cat"], None).tolist() == [-1]
    head = random_head()
    image = torch.randn(2, E)
    logits = head.class_logits(image, torch.randn(3, E), columns, torch.tensor(0.0))
    full = head.linear(head.film_image(image))
    torch.testing.assert_close(logits[:, 0], full[:, 2])
    torch.testing.assert_close(logits[:, 2], full[:, 0])
    assert torch.equal(logits[:, 1], torch.zeros(2))


def test_fusion_on_head_classes_similarity_on_the_others():
    sim, head = torch.randn(2, 3), torch.randn(2, 3)
    columns = torch.tensor([1, -1, 0])
    fused = fuse_logits(sim, head, columns, settings(weight=0.6))
    torch.testing.assert_close(fused[:, [0, 2]], 0.4 * sim[:, [0, 2]] + 0.6 * head[:, [0, 2]])
    assert torch.equal(fused[:, 1], sim[:, 1])
    head_only = fuse_logits(sim, head, columns, settings(test_time_fusion=False))
    assert torch.equal(head_only[:, [0, 2]], head[:, [0, 2]]) and torch.equal(head_only[:, 1], sim[:, 1])


def test_head_takes_the_number_of_classes_of_a_checkpoint():
    trained = random_head(classes=5)
    head = DePTHead(E, 2)
    weight = head.linear.weight
    head.match_checkpoint(trained.state_dict())
    head.load_state_dict(trained.state_dict())
    assert head.linear.weight is weight and head.linear.out_features == 5
    assert torch.equal(head.linear.weight, trained.linear.weight)
    with pytest.raises(CheckpointError, match=r"shape \(5, 7\).*\[classes, 32\]"):
        DePTHead(E, 2).match_checkpoint({"linear.weight": torch.zeros(5, 7)})


@pytest.mark.parametrize(
    "opts, message",
    [
        (["TRAINER.LINEAR_PROBE.TYPE", "mlp"], "TRAINER.LINEAR_PROBE.TYPE='mlp' is not supported"),
        (["TRAINER.LINEAR_PROBE.WEIGHT", "1.5"], r"TRAINER.LINEAR_PROBE.WEIGHT must be in \[0, 1\]"),
    ],
)
def test_invalid_dept_settings_are_config_errors(opts, message):
    with pytest.raises(ConfigError, match=message):
        DePTSettings.from_cfg(build_config(opts=opts))


def test_official_keys_are_accepted_with_dept_s_defaults():
    cfg = build_config(opts=["TRAINER.LINEAR_PROBE.WEIGHT", "0.5", "TRAINER.FILM.LINEAR_PROBE", "False"])
    assert DePTSettings.from_cfg(cfg) == settings(weight=0.5, film=False)
    assert DePTSettings.from_cfg(build_config()) == settings()
    assert set(DePTHead(E, 3, film=False).state_dict()) == {"linear.weight", "linear.bias"}


def test_dept_similarity_branch_is_coop_and_gradients_reach_prompt_head_and_film(tiny_clip):  # noqa: F811
    torch.manual_seed(0)
    learner = DePTPromptLearner(tiny_clip, CLASSES, 4)
    coop = CoOpPromptLearner(tiny_clip, CLASSES, 4)
    with torch.no_grad():
        coop.ctx.copy_(learner.ctx)
    model, reference = DePTCLIP(tiny_clip, learner), PromptedCLIP(tiny_clip, coop)
    image = torch.randn(2, 3, 32, 32)
    out = model.dept_outputs(image, labels=torch.tensor([0, 2]))
    torch.testing.assert_close(out.sim, reference(image), rtol=0, atol=1e-5)
    loss, _ = dept_loss(out.sim, torch.tensor([0, 2]), out.head, out.head_labels, 0.7)
    loss.backward()
    grads = {name: p.grad for name, p in learner.named_parameters()}
    assert set(grads) == {
        "ctx",
        "head.film_image.scale",
        "head.film_image.bias",
        "head.film_text.scale",
        "head.film_text.bias",
        "head.linear.weight",
        "head.linear.bias",
    }
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())
    assert all(p.grad is None for p in tiny_clip.parameters())
    raw = tiny_clip.visual(image).float()
    torch.testing.assert_close(out.image_features, normalize(raw))  # the head reads raw features, sim normalised ones


# ---------------------------------------------------------------- configs

DEPT_ANCHOROPT = {  # N_CTX / epochs / CE weight / linear-probe weight w (DePT+AnchorOPT column)
    "imagenet": (4, 10, 10, 0.5),
    "caltech101": (4, 10, 10, 0.5),
    "oxford_pets": (4, 10, 10, 0.5),
    "stanford_cars": (8, 20, 10, 0.6),
    "oxford_flowers": (8, 10, 10, 0.9),
    "food101": (4, 10, 10, 0.5),
    "fgvc_aircraft": (4, 20, 10, 0.6),
    "sun397": (8, 10, 10, 0.6),
    "dtd": (8, 10, 10, 0.8),
    "eurosat": (8, 20, 10, 0.9),
    "ucf101": (8, 10, 10, 0.8),
}
CONFIGS = REPO / "configs" / "trainers"


@pytest.mark.parametrize("stem", sorted(DEPT_ANCHOROPT))
def test_dept_anchoropt_configs_hold_the_published_settings(stem):
    cfg = build_config(
        str(REPO / "configs" / "datasets" / f"{stem}.yaml"),
        [
            str(CONFIGS / "DePT_AnchorOPT" / "vit_b16.yaml"),
            str(CONFIGS / "DePT_AnchorOPT" / "base2new" / f"{stem}.yaml"),
        ],
    )
    a = cfg.TRAINER.ANCHOROPT
    assert (a.N_CTX, cfg.OPTIM.MAX_EPOCH, a.PROMPT_CE_WEIGHT, cfg.TRAINER.LINEAR_PROBE.WEIGHT) == DEPT_ANCHOROPT[stem]
    assert a.KD_WEIGHT == 0.0  # DePT + AnchorOPT has no distillation term
    assert (
        cfg.OPTIM.NAME,
        cfg.OPTIM.LR,
        cfg.DATALOADER.TRAIN_X.BATCH_SIZE,
        a.ANCHOR_LEN,
        a.GUMBEL_TEMP,
        cfg.TRAINER.LINEAR_PROBE.TYPE,
        cfg.TRAINER.FILM.LINEAR_PROBE,
        cfg.TRAINER.COOP.PREC,
    ) == ("sgd", 0.0035, 4, 1, 1.0, "linear", True, "fp16")
    StageIISettings.from_cfg(cfg)
    DePTSettings.from_cfg(cfg)


@pytest.mark.parametrize("epochs", [10, 20])
def test_dept_configs_are_the_official_schedules(epochs):
    cfg = build_config("", [str(CONFIGS / "DePT" / f"vit_b16_ep{epochs}_bs4_lr35.yaml")])
    assert (cfg.OPTIM.MAX_EPOCH, cfg.OPTIM.LR, cfg.DATALOADER.TRAIN_X.BATCH_SIZE) == (epochs, 0.0035, 4)
    assert (cfg.TRAINER.COOP.N_CTX, cfg.TRAINER.COOP.CTX_INIT, cfg.TRAINER.LINEAR_PROBE.WEIGHT) == (4, "", 0.7)


# ---------------------------------------------------------------- through train.py

EPOCHS = 4
DEPT_OPTS = ("TRAINER.COOP.N_CTX", "4", "TRAINER.LINEAR_PROBE.WEIGHT", "0.7")
AO_OPTS = (
    "TRAINER.ANCHOROPT.N_CTX",
    "2",
    "TRAINER.LINEAR_PROBE.WEIGHT",
    "0.6",
    "TRAINER.ANCHOROPT.PROMPT_CE_WEIGHT",
    "1.0",
    "TRAINER.ANCHOROPT.KD_WEIGHT",
    "0.0",
)
HEAD_KEYS = {
    "head.film_image.scale",
    "head.film_image.bias",
    "head.film_text.scale",
    "head.film_text.bias",
    "head.linear.weight",
    "head.linear.bias",
}


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_clip_state_dict_file):  # noqa: F811
    return make_env_with_anchor(tmp_path_factory.mktemp("dept"), tiny_clip_state_dict_file)


@pytest.fixture(scope="module")
def dept_run(env):
    return run_watched(env, "DePT", env.root / "dept", *DEPT_OPTS, epochs=EPOCHS)


@pytest.fixture(scope="module")
def anchoropt_run(env):
    return run_watched(
        env,
        "DePT_AnchorOPT",
        env.root / "dept_anchoropt",
        *AO_OPTS,
        "TRAINER.ANCHOROPT.ANCHOR_PATH",
        str(env.stage1),
        epochs=EPOCHS,
    )


def dept_training_loss(trainer, image, label):
    out = trainer.model.dept_outputs(image, labels=label)
    return dept_loss(out.sim, label, out.head, out.head_labels, trainer.dept.weight)[0]


def test_dept_trains_prompt_head_and_film_and_leaves_clip_alone(env, dept_run):
    assert dept_run.changed == set(dept_run.initial) == {"ctx"} | HEAD_KEYS
    assert dept_run.initial["head.linear.weight"].shape[0] == len(env.base_classes)
    assert dept_run.frozen_changed == set() and len(dept_run.frozen_before) > 10
    trainer = reloaded_trainer(env, dept_run, "DePT", *DEPT_OPTS)
    before = mean_training_loss(trainer, dept_run.initial, dept_training_loss)
    after = mean_training_loss(trainer, dept_run.final, dept_training_loss)
    assert after < before - 0.01
    assert all({"ce", "head"} <= set(step) for step in dept_run.steps)
    base = read_results(dept_run.out)
    assert base["dept"]["head_classes"] == len(env.base_classes) and base["dept"]["similarity_only_classes"] == 0


def test_dept_checkpoint_reload_restores_head_and_film(env, dept_run):
    assert set(dept_run.checkpoint["state_dict"]) == {"ctx"} | HEAD_KEYS
    assert dept_run.checkpoint["dept"]["trained_classnames"] == env.base_classes
    fresh = reloaded_trainer(env, dept_run, "DePT", *DEPT_OPTS)
    torch.testing.assert_close(evaluation_logits(fresh, dept_run.images), dept_run.trained_logits)
    # Without the trained head and FiLM (the official DePT_AnchorOPT's checkpoints), the logits differ.
    state = fresh.model.prompt_learner.state_dict()
    fresh.model.prompt_learner.load_state_dict({**state, **{k: dept_run.initial[k] for k in HEAD_KEYS}})
    assert not torch.allclose(evaluation_logits(fresh, dept_run.images), dept_run.trained_logits, atol=1e-3)


def test_dept_new_classes_score_by_similarity_and_a_mixed_set_per_class(env, dept_run):
    run_train(eval_args(env, dept_run, "DePT", env.root / "dept_new", *DEPT_OPTS))
    new = read_results(env.root / "dept_new")
    assert (new["num_classes"], new["dept"]["head_classes"]) == (len(env.new_classes), 0)
    trainer = reloaded_trainer(env, dept_run, "DePT", *DEPT_OPTS, subsample="all")
    assert trainer.model.prompt_learner.head.linear.out_features == len(env.base_classes)
    image = next(iter(trainer.test_loader))["img"]
    logits = evaluation_logits(trainer, image)
    with torch.no_grad():
        text = trainer.model.raw_text_features()
        sim = scaled_logits(
            normalize(trainer.model.raw_image_features(image)), normalize(text), trainer.model.logit_scale
        )
        head = trainer.model.prompt_learner.head
        head_all = head.linear(head.film_image(trainer.model.raw_image_features(image)))
    for column, name in enumerate(trainer.classnames):
        if name in env.base_classes:
            expected = 0.3 * sim[:, column] + 0.7 * head_all[:, env.base_classes.index(name)]
        else:
            expected = sim[:, column]
        torch.testing.assert_close(logits[:, column], expected, rtol=0, atol=1e-4)


def test_dept_anchoropt_trains_v_theta_head_and_film_but_not_the_anchor(env, anchoropt_run):
    run = anchoropt_run
    assert run.changed == set(run.initial) - {"anchor"} == {"ctx", "positions.logits"} | HEAD_KEYS
    assert torch.equal(run.final["anchor"], load_anchor(env.stage1).anchor)
    assert run.frozen_changed == set()
    assert all(step["kd"] == 0 and {"ce", "head"} <= set(step) for step in run.steps)
    trainer = reloaded_trainer(env, run, "DePT_AnchorOPT", *AO_OPTS)
    before = mean_training_loss(trainer, run.initial, stage2_training_loss)
    after = mean_training_loss(trainer, run.final, stage2_training_loss)
    assert after < before - 0.01
    torch.testing.assert_close(evaluation_logits(trainer, run.images), run.trained_logits)  # head and FiLM reloaded
    assert set(run.checkpoint["state_dict"]) == {"ctx", "anchor", "positions.logits"} | HEAD_KEYS


def test_dept_anchoropt_loss_is_ce_weight_times_dept_loss_plus_distillation(env, anchoropt_run):
    trainer = reloaded_trainer(
        env,
        anchoropt_run,
        "DePT_AnchorOPT",
        "TRAINER.ANCHOROPT.N_CTX",
        "2",
        "TRAINER.LINEAR_PROBE.WEIGHT",
        "0.6",
        "TRAINER.ANCHOROPT.PROMPT_CE_WEIGHT",
        "10.0",
        "TRAINER.ANCHOROPT.KD_WEIGHT",
        "2.0",
        "TRAINER.ANCHOROPT.KD_TEMPERATURE",
        "2.0",
    )
    normal, anchor = torch.randn(2, 3), torch.randn(2, 3)
    label, head, head_labels = torch.tensor([0, 1]), torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    loss, parts = trainer.stage2_loss(normal, anchor, label, head_logits=head, head_labels=head_labels)
    teacher = F.softmax((normal + anchor) / 2 / 2, dim=-1)
    kd = (teacher * (teacher.log() - F.log_softmax(normal / 2, dim=-1))).sum() / normal.numel() * 4
    task = 0.4 * F.cross_entropy(normal, label) + 0.6 * F.cross_entropy(head, head_labels)
    torch.testing.assert_close(loss, 10.0 * task + 2.0 * kd)
    torch.testing.assert_close(parts["kd"], kd)
    with pytest.raises(ValueError, match="head logits"):
        trainer.stage2_loss(normal, anchor, label)


def test_dept_anchoropt_fuses_on_base_and_uses_the_ensemble_on_new_classes(env, anchoropt_run):
    base = read_results(anchoropt_run.out)
    assert base["scoring"]["normal_classes"] == base["dept"]["head_classes"] == len(env.base_classes)
    run_train(eval_args(env, anchoropt_run, "DePT_AnchorOPT", env.root / "dept_anchoropt_new", *AO_OPTS))
    new = read_results(env.root / "dept_anchoropt_new")
    assert new["scoring"]["ensemble_classes"] == len(env.new_classes) and new["dept"]["head_classes"] == 0
    per_class = ("TRAINER.ANCHOROPT.SCORING_MODE", "per_class")
    trainer = reloaded_trainer(env, anchoropt_run, "DePT_AnchorOPT", *AO_OPTS, *per_class, subsample="all")
    image = next(iter(trainer.test_loader))["img"]
    logits = evaluation_logits(trainer, image)
    model = trainer.model
    with torch.no_grad():
        raw_image = model.raw_image_features(image)
        sim, anchor = model.branch_logits(image, anchor_text=normalize(model.anchor_text_features()))
        head = model.prompt_learner.head
        head_all = head.linear(head.film_image(raw_image))
    for column, name in enumerate(trainer.classnames):
        if name in env.base_classes:
            expected = 0.4 * sim[:, column] + 0.6 * head_all[:, env.base_classes.index(name)]
        else:
            expected = (sim[:, column] + anchor[:, column]) / 2
        torch.testing.assert_close(logits[:, column], expected, rtol=0, atol=1e-4)
    # the default scores a mixed set with the ensemble of the plain similarity logits throughout (no head fusion)
    trainer = reloaded_trainer(env, anchoropt_run, "DePT_AnchorOPT", *AO_OPTS, subsample="all")
    torch.testing.assert_close(evaluation_logits(trainer, image), (sim + anchor) / 2, rtol=0, atol=1e-4)
    assert trainer.results_extras()["dept"]["head_classes"] == 0
