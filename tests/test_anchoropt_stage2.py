"""AnchorOPT Stage II on CoOp: prompt learner, loss, per-class scoring, LEGACY, positions, configs, train.py runs."""

import math

import clip
import pytest
import torch
import torch.nn.functional as F
import yaml

from anchoropt.cli.errors import run_cli
from anchoropt.cli.positions import main as positions_main
from anchoropt.config import build_config
from anchoropt.engine import TRAINER_REGISTRY, load_checkpoint
from anchoropt.errors import CheckpointError, ConfigError
from anchoropt.method.anchor_checkpoint import load_anchor, save_anchor
from anchoropt.method.position_export import position_settings, positions_from_checkpoint
from anchoropt.method.positions import order_text
from anchoropt.models.clip_parts import scaled_logits
from anchoropt.models.coop_anchoropt import CoOpAnchorOPTCLIP
from anchoropt.models.stage2_base import AnchorOPTPromptLearner, Stage2Model, check_stage2_model
from anchoropt.prompts.layout import eot_token_id, sot_token_id
from tests.support.anchoropt_runs import (
    build_trainer_from_args,
    make_env_with_anchor,
    read_results,
    record_method,
    run_train,
)
from tests.support.clip_fixtures import tiny_clip, tiny_clip_dir, tiny_clip_state_dict_file  # noqa: F401
from tests.support.data_layouts import REPO, write_dataset
from tests.support.method_fixtures import write_official_checkpoint
from trainers.anchoropt_config import ignored_setting_warnings
from trainers.anchoropt_stage2 import AnchorOPTStageII, StageIISettings, scoring_summary

pytestmark = pytest.mark.filterwarnings("ignore:description file .* fewer than")

CLASSES = ["cat", "golden_retriever", "sea lion"]
EPOCHS = 5


def learner_for(clip_model, mode="learned", n_ctx=4, anchor_len=1, legacy=False, classes=CLASSES):
    torch.manual_seed(0)
    anchor = torch.randn(anchor_len, clip_model.token_embedding.weight.shape[1])
    return AnchorOPTPromptLearner(
        clip_model, classes, n_ctx, anchor_len, anchor=anchor, position_mode=mode, legacy=legacy
    )


# ---------------------------------------------------------------- prompt learner


def test_identity_prompt_is_sos_v_a_class_dot_eos_token_by_token(tiny_clip):  # noqa: F811
    learner = learner_for(tiny_clip, mode="identity", n_ctx=4, anchor_len=2).eval()
    embeds, readout = learner()
    table = tiny_clip.token_embedding.weight
    for row, name in enumerate(CLASSES):
        tokens = clip.tokenize(f"X X X X X X {name.replace('_', ' ')}.")[0]
        eot = int(tokens.argmax())
        assert int(readout[row]) == eot and tokens[0] == sot_token_id() and tokens[eot] == eot_token_id()
        assert torch.equal(embeds[row, 0], table[sot_token_id()])
        assert torch.equal(embeds[row, 1:5], learner.ctx.detach())
        assert torch.equal(embeds[row, 5:7], learner.anchor)
        assert torch.equal(embeds[row, 7 : eot + 1], table[tokens[7 : eot + 1]])  # class tokens, ".", EOT


def test_readout_is_the_eot_of_every_class_and_n_earlier_in_legacy(tiny_clip):  # noqa: F811
    dot = clip.tokenize(".")[0, 1]
    for anchor_len in (1, 2):
        correct = learner_for(tiny_clip, anchor_len=anchor_len)
        legacy = learner_for(tiny_clip, anchor_len=anchor_len, legacy=True)
        ids = correct.layout.token_ids
        rows = torch.arange(len(CLASSES))
        assert torch.all(ids[rows, correct.readout_index] == eot_token_id())
        assert torch.equal(legacy.readout_index, correct.readout_index - anchor_len)
        if anchor_len == 1:
            assert torch.all(ids[rows, legacy.readout_index] == dot)  # the official read-out: the "." token


def test_training_sample_is_one_hot_per_row_fresh_and_trains_theta_and_v_only(tiny_clip):  # noqa: F811
    learner = learner_for(tiny_clip).train()
    sources = torch.cat([learner.ctx.detach(), learner.anchor])
    orders = set()
    for _ in range(10):
        matrix = learner.positions()
        assert torch.equal(matrix.detach().sum(-1), torch.ones(5)) and set(matrix.detach().unique().tolist()) <= {
            0.0,
            1.0,
        }
        orders.add(tuple(matrix.detach().argmax(-1).tolist()))
    assert len(orders) > 1  # a fresh sample per call
    embeds, readout = learner()
    chosen = embeds[0, 1:6].detach()
    assert all(any(torch.equal(slot, source) for source in sources) for slot in chosen)
    embeds[:, 1:6].pow(2).sum().backward()
    assert learner.positions.logits.grad is not None and learner.positions.logits.grad.abs().sum() > 0
    assert learner.ctx.grad is not None and learner.ctx.grad.abs().sum() > 0
    assert [name for name, _ in learner.named_parameters()] == ["ctx", "positions.logits"]
    assert "anchor" in learner.state_dict() and not learner.anchor.requires_grad


def test_evaluation_positions_are_the_row_argmax_and_deterministic(tiny_clip):  # noqa: F811
    learner = learner_for(tiny_clip).eval()
    first, _ = learner()
    second, _ = learner()
    assert torch.equal(first, second)
    sources = torch.cat([learner.ctx.detach(), learner.anchor])
    expected = sources[learner.positions.logits.detach().argmax(-1)]
    assert torch.equal(first[0, 1:6].detach(), expected)


def test_sinkhorn_mode_gives_a_permutation_at_test(tiny_clip):  # noqa: F811
    learner = learner_for(tiny_clip, mode="sinkhorn", n_ctx=4, anchor_len=2).eval()
    matrix = learner.positions()
    assert torch.equal(matrix.sum(0), torch.ones(6)) and torch.equal(matrix.sum(1), torch.ones(6))
    assert sorted(matrix.argmax(-1).tolist()) == list(range(6))


def test_batched_context_shares_one_position_sample(tiny_clip):  # noqa: F811
    """The hook CoCoOp-style learners use: per-image contexts [B, M, d], one P per call."""
    learner = learner_for(tiny_clip).eval()
    ctx = torch.randn(3, 4, learner.ctx.shape[1])
    arranged = learner.arrange(ctx)
    for b in range(3):
        assert torch.allclose(arranged[b], learner.arrange(ctx[b]))
    embeds, _ = learner(ctx)
    assert embeds.shape[:2] == (3, len(CLASSES))


def test_wrong_anchor_shape_is_refused(tiny_clip):  # noqa: F811
    with pytest.raises(CheckpointError, match=r"shape \(1, 7\).*expected \(1, 64\)"):
        AnchorOPTPromptLearner(tiny_clip, CLASSES, 4, 1, anchor=torch.zeros(1, 7))


# ---------------------------------------------------------------- loss and settings


class _Settings:
    def __init__(self, **overrides):
        values = dict(ce_weight=2.0, kd_weight=3.0, kd_temperature=2.0)
        values.update(overrides)
        self.stage2 = StageIISettings(
            n_ctx=4,
            anchor_len=1,
            ctx_init="",
            position_mode="learned",
            gumbel_temp=1.0,
            sinkhorn_iters=20,
            scoring_mode="auto",
            anchor_path="",
            legacy=False,
            **values,
        )


def test_stage2_loss_equals_hand_computation_on_fixed_logits():
    normal = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    anchor = torch.tensor([[1.0, 1.0, 0.0], [-1.0, 2.0, 0.5]])
    label = torch.tensor([0, 2])
    loss, parts = AnchorOPTStageII.stage2_loss(_Settings(), normal, anchor, label)
    ce = -sum(math.log(math.exp(normal[i, label[i]]) / sum(math.exp(v) for v in normal[i])) for i in range(2)) / 2
    kl = 0.0
    for i in range(2):
        teacher = [math.exp(v / 2) for v in ((normal[i] + anchor[i]) / 2).tolist()]
        student = [math.exp(v / 2) for v in normal[i].tolist()]
        p = [t / sum(teacher) for t in teacher]
        q = [s / sum(student) for s in student]
        kl += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
    expected = 2.0 * ce + 3.0 * 2.0**2 * kl / normal.numel()
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(parts["ce"]) == pytest.approx(ce, rel=1e-5)


def test_kd_weight_zero_is_plain_cross_entropy_without_anchor_logits():
    normal = torch.randn(4, 5)
    label = torch.tensor([0, 1, 2, 3])
    loss, parts = AnchorOPTStageII.stage2_loss(_Settings(kd_weight=0.0, kd_temperature=0.0), normal, None, label)
    assert float(loss) == pytest.approx(2.0 * float(F.cross_entropy(normal, label)), rel=1e-6)
    assert float(parts["kd"]) == 0.0


@pytest.mark.parametrize(
    "opts, message",
    [
        (["TRAINER.ANCHOROPT.PROMPT_CE_WEIGHT", "0.0", "TRAINER.ANCHOROPT.KD_WEIGHT", "0.0"], "nothing to train"),
        (["TRAINER.ANCHOROPT.SCORING_MODE", "mixed"], "unknown scoring mode 'mixed'"),
        (["TRAINER.ANCHOROPT.KD_TEMPERATURE", "0.0"], "KD_TEMPERATURE must be > 0"),
    ],
)
def test_invalid_settings_are_config_errors(opts, message):
    with pytest.raises(ConfigError, match=message):
        StageIISettings.from_cfg(build_config(opts=opts))


def test_legacy_cannot_be_combined_with_sinkhorn(tiny_clip):  # noqa: F811
    with pytest.raises(ConfigError, match="LEGACY .* cannot be combined .* sinkhorn"):
        AnchorOPTPromptLearner(tiny_clip, CLASSES, 4, 1, position_mode="sinkhorn", legacy=True)


def test_every_stage2_model_meets_the_contract_and_a_missing_member_is_named(tiny_clip):  # noqa: F811
    from anchoropt.models.cocoop_anchoropt import CoCoOpAnchorOPTCLIP
    from anchoropt.models.dept_anchoropt import DePTAnchorOPTCLIP
    from anchoropt.models.maple_anchoropt import MaPLeAnchorOPTCLIP

    for model_class in (CoOpAnchorOPTCLIP, CoCoOpAnchorOPTCLIP, DePTAnchorOPTCLIP, MaPLeAnchorOPTCLIP):
        for member in ("prompt_state", "branch_logits", "anchor_text_features", "set_classnames"):
            assert callable(getattr(model_class, member)), (model_class, member)
        assert isinstance(model_class.PROMPTS_FIXED_IN_EVAL, bool)
    model = CoOpAnchorOPTCLIP(tiny_clip, learner_for(tiny_clip))
    assert isinstance(model, Stage2Model)
    check_stage2_model(model, "CoOp_AnchorOPT")
    incomplete = type("Incomplete", (torch.nn.Module,), {"PROMPTS_FIXED_IN_EVAL": True})()
    incomplete.prompt_learner = model.prompt_learner
    with pytest.raises(
        TypeError,
        match="Incomplete lacks classnames, set_classnames, anchor_text_features, prompt_state, branch_logits",
    ):
        check_stage2_model(incomplete, "My_AnchorOPT")
    wrong_learner = CoOpAnchorOPTCLIP(tiny_clip, learner_for(tiny_clip))
    wrong_learner.prompt_learner = torch.nn.Linear(2, 2)
    with pytest.raises(TypeError, match="prompt_learner is a Linear, expected an AnchorOPTPromptLearner"):
        check_stage2_model(wrong_learner, "My_AnchorOPT")


def test_trainer_checks_the_contract_when_it_adopts_the_model(env, tmp_path, monkeypatch):
    """A variant whose model lacks a member fails at build time with the member's name."""
    import trainers.coop_anchoropt as coop_anchoropt

    class Broken(CoOpAnchorOPTCLIP):
        def __getattribute__(self, name):
            if name == "branch_logits":
                raise AttributeError(name)
            return super().__getattribute__(name)

    monkeypatch.setattr(coop_anchoropt, "CoOpAnchorOPTCLIP", Broken)
    with pytest.raises(TypeError, match="CoOp_AnchorOPT: the Stage II model Broken lacks branch_logits"):
        build_trainer_from_args(
            env.args("CoOp_AnchorOPT", tmp_path / "broken", "TRAINER.ANCHOROPT.ANCHOR_PATH", str(env.stage1))
        )


def test_scoring_summary_records_the_rule_and_counts_each_kind():
    seen = torch.tensor([True, True, False])
    assert scoring_summary(seen, "per_class") == {
        "mode": "per_class",
        "rule": "per_class",
        "rule_text": "learned prompt for trained classes (by name), ensemble for the others",
        "num_classes": 3,
        "seen_classes": 2,
        "normal_classes": 2,
        "ensemble_classes": 1,
        "anchor_classes": 0,
    }
    auto = scoring_summary(seen, "auto")
    assert (auto["rule"], auto["normal_classes"], auto["ensemble_classes"]) == ("ensemble", 0, 3)
    trained_set = scoring_summary(torch.ones(3, dtype=torch.bool), "auto")
    assert (trained_set["rule"], trained_set["normal_classes"], trained_set["ensemble_classes"]) == ("normal", 3, 0)
    assert scoring_summary(seen, "anchor")["anchor_classes"] == 3


# ---------------------------------------------------------------- train.py runs


def _learner_state(trainer, _):
    return {k: v.detach().clone() for k, v in trainer.model.prompt_learner.state_dict().items()}


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_clip_state_dict_file):  # noqa: F811
    return make_env_with_anchor(tmp_path_factory.mktemp("stage2"), tiny_clip_state_dict_file)


@pytest.fixture(scope="module")
def trained(env):
    """Stage II on the base classes, anchor from the Stage I output directory, watched."""
    out = env.root / "stage2"
    with pytest.MonkeyPatch.context() as mp:
        steps = record_method(mp, AnchorOPTStageII, "forward_backward")
        anchor_calls = record_method(
            mp, CoOpAnchorOPTCLIP, "anchor_text_features", lambda m, _: m.prompt_learner.training
        )
        prompt_calls = record_method(mp, CoOpAnchorOPTCLIP, "prompt_state", lambda m, _: m.prompt_learner.training)
        initial = record_method(mp, AnchorOPTStageII, "before_train", _learner_state)
        args = env.args(
            "CoOp_AnchorOPT",
            out,
            "OPTIM.MAX_EPOCH",
            str(EPOCHS),
            "TRAINER.ANCHOROPT.ANCHOR_PATH",
            str(env.stage1),
            "TRAINER.ANCHOROPT.N_CTX",
            "4",
            "TRAINER.ANCHOROPT.PROMPT_CE_WEIGHT",
            "1.0",
            "TRAINER.ANCHOROPT.KD_WEIGHT",
            "1.0",
        )
        run_train(args)
    final = load_checkpoint(str(out / "prompt_learner" / f"model.pth.tar-{EPOCHS}"))
    return {
        "out": out,
        "args": args,
        "steps": steps,
        "anchor_calls": anchor_calls,
        "prompt_calls": prompt_calls,
        "initial": initial[0],
        "final": final,
    }


def evaluate(env, trained, name, *opts, subsample="new", dataset=None):
    out = env.root / name
    run_train(
        env.args(
            "CoOp_AnchorOPT",
            out,
            *opts,
            subsample=subsample,
            dataset=dataset,
            flags=("--eval-only", "--model-dir", str(trained["out"]), "--load-epoch", str(EPOCHS)),
        )
    )
    return read_results(out)


def expected_training_loss(trainer, state, batches, samples=16):
    """The Stage II loss on `batches` averaged over `samples` position draws (the same draws for every state)."""
    learner = trainer.model.prompt_learner
    learner.load_state_dict(state)
    learner.train()
    torch.manual_seed(0)
    losses = []
    with torch.no_grad():
        anchor_text = trainer.anchor_text_features()
        for _ in range(samples):
            prompts = trainer.model.prompt_state()
            for image, label in batches:
                normal, anchor = trainer.model.branch_logits(image, prompts, anchor_text)
                losses.append(float(trainer.stage2_loss(normal, anchor, label)[0]))
    return sum(losses) / len(losses)


def test_training_lowers_the_loss_and_changes_v_and_theta_but_not_the_anchor(env, trained):
    # Single steps are noisy (a fresh position sample each), so compare the expected loss.
    trainer = build_trainer_from_args(trained["args"])
    batches = [(batch["img"], batch["label"]) for batch in trainer.train_loader_x]
    before = expected_training_loss(trainer, trained["initial"], batches)
    after = expected_training_loss(trainer, trained["final"]["state_dict"], batches)
    assert after < before - 0.01
    assert all(step["kd"] >= 0 for step in trained["steps"]) and any(step["kd"] > 0 for step in trained["steps"])
    before, after = trained["initial"], trained["final"]["state_dict"]
    assert not torch.equal(before["ctx"], after["ctx"])
    assert not torch.equal(before["positions.logits"], after["positions.logits"])
    assert torch.equal(before["anchor"], after["anchor"])
    assert torch.equal(after["anchor"], load_anchor(env.stage1).anchor)
    assert trained["final"]["anchoropt"]["trained_classnames"] == env.base_classes


def test_anchor_branch_is_encoded_once_per_class_set_not_per_step(trained):
    assert len(trained["steps"]) >= 6
    assert trained["anchor_calls"] == [True]  # once in training, and the base evaluation does not need it
    assert trained["prompt_calls"].count(False) == 1  # normal prompts: once for the whole evaluation


def test_base_evaluation_uses_the_normal_prompt(env, trained):
    results = read_results(trained["out"])
    assert results["scoring"]["normal_classes"] == len(env.base_classes)
    assert results["scoring"]["ensemble_classes"] == 0
    assert results["trained_classes"] == len(env.base_classes)


def test_new_evaluation_uses_the_ensemble_and_repeats_exactly(env, trained):
    with pytest.MonkeyPatch.context() as mp:
        anchor_calls = record_method(mp, CoOpAnchorOPTCLIP, "anchor_text_features", lambda m, _: 1)
        prompt_calls = record_method(mp, CoOpAnchorOPTCLIP, "prompt_state", lambda m, _: 1)
        first = evaluate(env, trained, "eval_new_1")
    second = evaluate(env, trained, "eval_new_2")
    assert first["scoring"]["ensemble_classes"] == len(env.new_classes) and first["scoring"]["normal_classes"] == 0
    assert first["anchor"]["source"].startswith("checkpoint")
    assert (len(anchor_calls), len(prompt_calls)) == (1, 1)
    assert first["metrics"] == second["metrics"]
    forced = evaluate(env, trained, "eval_new_ensemble", "TRAINER.ANCHOROPT.SCORING_MODE", "ensemble")
    assert forced["metrics"] == first["metrics"]
    normal = evaluate(env, trained, "eval_new_normal", "TRAINER.ANCHOROPT.SCORING_MODE", "normal")
    assert normal["scoring"]["normal_classes"] == len(env.new_classes)


def scored_columns(env, trained, out, *opts, subsample="all", dataset=None, trained_classnames=None):
    """(combined logits, z_n, z_a, trainer) of one test batch under the trainer's scoring rule."""
    trainer = build_trainer_from_args(env.args("CoOp_AnchorOPT", out, *opts, subsample=subsample, dataset=dataset))
    trainer.load_model(str(trained["out"]), epoch=EPOCHS)
    if trained_classnames is not None:
        trainer.trained_classnames = list(trained_classnames)
    trainer.set_model_mode("eval")
    image = next(iter(trainer.test_loader))["img"]
    with torch.no_grad():
        trainer.before_evaluation()
        logits = trainer.model_inference(image)
        model = trainer.model
        features = model.image_encoder(image)
        normal = scaled_logits(features, model.prompt_state(), model.logit_scale)
        anchor = scaled_logits(features, model.anchor_text_features(), model.logit_scale)
    return logits, normal, anchor, trainer


def test_inference_rule_per_evaluation_set_and_per_class_on_a_mixed_class_set(env, trained):
    logits, normal, anchor, trainer = scored_columns(env, trained, env.root / "eval_all_direct")
    seen = [name in env.base_classes for name in trainer.classnames]
    assert sum(seen) == len(env.base_classes) and len(seen) == len(env.dataset.classnames)
    # default: a class set that is not the trained one is scored with the ensemble for every class
    assert torch.allclose(logits, (normal + anchor) / 2, atol=1e-5)
    scoring = trainer.results_extras()["scoring"]
    assert (scoring["rule"], scoring["ensemble_classes"]) == ("ensemble", len(seen))
    # the explicit per-class mode mixes by name
    logits, normal, anchor, trainer = scored_columns(
        env, trained, env.root / "eval_all_per_class", "TRAINER.ANCHOROPT.SCORING_MODE", "per_class"
    )
    for column, is_seen in enumerate(seen):
        expected = normal[:, column] if is_seen else (normal[:, column] + anchor[:, column]) / 2
        assert torch.allclose(logits[:, column], expected, atol=1e-5)
    scoring = trainer.results_extras()["scoring"]
    assert (scoring["rule"], scoring["ensemble_classes"]) == ("per_class", len(env.new_classes))


def test_cross_dataset_target_sharing_class_names_is_scored_with_the_ensemble_throughout(env, trained, tmp_path):
    """A source that shares names with the target (ImageNet and OxfordPets share 16 breeds): one rule for all."""
    target = write_dataset("EuroSAT", env.root / "data", n_classes=3, n_per_class=6)
    shared = target.classnames[:2]  # the source was trained on two of the target's names, and on others
    source_classes = [*env.base_classes, *shared]
    logits, normal, anchor, trainer = scored_columns(
        env, trained, tmp_path / "auto", dataset=target, trained_classnames=source_classes
    )
    assert trainer.results_extras()["scoring"]["seen_classes"] == 2
    assert torch.allclose(logits, (normal + anchor) / 2, atol=1e-5)
    assert trainer.results_extras()["scoring"]["rule"] == "ensemble"
    logits, normal, anchor, trainer = scored_columns(
        env,
        trained,
        tmp_path / "mixed",
        "TRAINER.ANCHOROPT.SCORING_MODE",
        "per_class",
        dataset=target,
        trained_classnames=source_classes,
    )
    assert torch.allclose(logits[:, :2], normal[:, :2], atol=1e-5)
    assert torch.allclose(logits[:, 2], (normal[:, 2] + anchor[:, 2]) / 2, atol=1e-5)


def test_cross_dataset_evaluation_uses_the_stored_source_anchor(env, trained):
    target = write_dataset("DescribableTextures", env.root / "data", n_classes=3, n_per_class=6)
    results = evaluate(env, trained, "eval_dtd", subsample="all", dataset=target)
    assert results["dataset"] == "DescribableTextures"
    assert results["scoring"]["ensemble_classes"] == 3 and results["scoring"]["normal_classes"] == 0
    trainer = build_trainer_from_args(
        env.args("CoOp_AnchorOPT", env.root / "eval_dtd_direct", subsample="all", dataset=target)
    )
    trainer.load_model(str(trained["out"]), epoch=EPOCHS)
    assert torch.equal(trainer.model.prompt_learner.anchor, load_anchor(env.stage1).anchor)


def test_eval_with_a_different_anchor_path_says_the_checkpoint_wins(env, trained, tmp_path, capsys):
    other = save_anchor(tmp_path / "other.pth", torch.randn(1, 64), env.base_classes, {})
    args = env.args("CoOp_AnchorOPT", tmp_path / "out", "TRAINER.ANCHOROPT.ANCHOR_PATH", str(other), subsample="new")
    trainer = build_trainer_from_args(args)
    trainer.load_model(str(trained["out"]), epoch=EPOCHS)
    assert "using the checkpoint's" in capsys.readouterr().out
    assert torch.equal(trainer.model.prompt_learner.anchor, trained["final"]["state_dict"]["anchor"])


def test_training_needs_a_fitting_anchor(env, tmp_path):
    base = ("OPTIM.MAX_EPOCH", "1")
    with pytest.raises(CheckpointError, match=r"TRAINER.ANCHOROPT.ANCHOR_PATH is required to train .*AnchorOPT_StageI"):
        run_train(env.args("CoOp_AnchorOPT", tmp_path / "a", *base))
    narrow = save_anchor(tmp_path / "narrow.pth", torch.randn(1, 7), env.base_classes, {})
    with pytest.raises(CheckpointError, match="width 7 does not match the CLIP text width 64"):
        run_train(env.args("CoOp_AnchorOPT", tmp_path / "b", *base, "TRAINER.ANCHOROPT.ANCHOR_PATH", str(narrow)))
    with pytest.raises(CheckpointError, match="ANCHOR_LEN is 2"):
        run_train(
            env.args(
                "CoOp_AnchorOPT",
                tmp_path / "c",
                *base,
                "TRAINER.ANCHOROPT.ANCHOR_PATH",
                str(env.stage1),
                "TRAINER.ANCHOROPT.ANCHOR_LEN",
                "2",
            )
        )
    with pytest.raises(CheckpointError, match="not found"):
        run_train(
            env.args("CoOp_AnchorOPT", tmp_path / "d", *base, "TRAINER.ANCHOROPT.ANCHOR_PATH", str(tmp_path / "nope"))
        )


def test_legacy_samples_positions_for_every_test_batch(env, tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        prompt_calls = record_method(mp, CoOpAnchorOPTCLIP, "prompt_state", lambda m, _: m.prompt_learner.training)
        run_train(
            env.args(
                "CoOp_AnchorOPT",
                tmp_path / "legacy",
                "OPTIM.MAX_EPOCH",
                "1",
                "TRAINER.ANCHOROPT.LEGACY",
                "True",
                "TRAINER.ANCHOROPT.ANCHOR_PATH",
                str(env.stage1),
            )
        )
    test_images = len(env.base_classes) * env.dataset.per_class["test"]
    assert prompt_calls.count(False) == math.ceil(test_images / 4)  # DATALOADER.TEST.BATCH_SIZE 4
    assert read_results(tmp_path / "legacy")["positions"]["legacy"] is True


def test_sinkhorn_with_two_anchor_tokens_from_a_released_anchor_file(env, tmp_path):
    anchor = torch.randn(2, 64).half().float()
    released = write_official_checkpoint(
        tmp_path / "anchor_prompt_learner" / "model.pth.tar", anchor, pickle_scheduler_object=True
    )
    out = tmp_path / "sinkhorn"
    run_train(
        env.args(
            "CoOp_AnchorOPT",
            out,
            "OPTIM.MAX_EPOCH",
            "2",
            "TRAINER.ANCHOROPT.ANCHOR_PATH",
            str(released),
            "TRAINER.ANCHOROPT.ANCHOR_LEN",
            "2",
            "TRAINER.ANCHOROPT.POSITION_MODE",
            "sinkhorn",
        )
    )
    order = read_results(out)["positions"]["order"]
    assert sorted(order.split()) == ["A1", "A2", "V1", "V2", "V3", "V4"]  # a permutation: nothing missing or repeated
    assert torch.equal(load_checkpoint(str(out / "prompt_learner" / "model.pth.tar-2"))["state_dict"]["anchor"], anchor)


# ---------------------------------------------------------------- position matrix export


def test_training_writes_the_position_matrix_and_the_command_renders_it(env, trained, tmp_path, capsys):
    logits = trained["final"]["state_dict"]["positions.logits"]
    expected = order_text(F.one_hot(logits.argmax(-1), logits.shape[0]).float(), 4, 1)
    report = (trained["out"] / "positions.txt").read_text()
    assert f"order: {expected}\n" in report
    assert (trained["out"] / "positions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    png = tmp_path / "figure.png"
    assert positions_main([str(trained["out"]), "--load-epoch", str(EPOCHS), "--out", str(png)]) == 0
    assert f"chosen order: {expected}" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("mode", ["learned", "sinkhorn", "anchor_middle"])
def test_position_matrix_is_rebuilt_from_a_checkpoint_in_every_mode(tiny_clip, tmp_path, mode):  # noqa: F811
    learner = learner_for(tiny_clip, mode=mode, n_ctx=3, anchor_len=2).eval()
    checkpoint = {"state_dict": learner.state_dict(), "epoch": 1, "anchoropt": position_settings(learner.positions)}
    rebuilt = positions_from_checkpoint(checkpoint)
    assert torch.equal(rebuilt.deterministic(), learner.positions.deterministic())
    torch.save(checkpoint, tmp_path / "model.pth.tar-1")
    png = tmp_path / "p.png"
    assert (
        positions_main([str(tmp_path / "model.pth.tar-1"), "--out", str(png), "--text", str(tmp_path / "p.txt")]) == 0
    )
    order = order_text(learner.positions.deterministic(), 3, 2)
    assert f"order: {order}\n" in (tmp_path / "p.txt").read_text() and png.is_file()
    if mode == "anchor_middle":
        assert order == "V1 V2 A1 A2 V3"


def test_positions_command_explains_a_directory_without_stage2_checkpoint(env, capsys):
    assert run_cli(positions_main)([str(env.stage1)]) == 2
    assert "no Stage II checkpoint with a position matrix" in capsys.readouterr().err


# ---------------------------------------------------------------- configs

STAGE2_PUBLISHED = {  # dataset config stem: N_CTX / epochs / CE weight / KD weight / KD temperature (CoOp+AnchorOPT)
    "imagenet": (6, 20, 100, 1000, 1),
    "caltech101": (4, 100, 100, 1000, 2),
    "oxford_pets": (4, 100, 100, 1000, 1),
    "stanford_cars": (8, 100, 100, 100, 4),
    "oxford_flowers": (4, 100, 100, 100, 2),
    "food101": (4, 20, 100, 1000, 4),
    "fgvc_aircraft": (4, 100, 100, 1, 4),
    "sun397": (8, 20, 100, 1, 2),
    "dtd": (4, 100, 100, 10, 4),
    "eurosat": (4, 100, 1, 0, 1),
    "ucf101": (8, 100, 100, 1000, 1),
}
CONFIGS = REPO / "configs" / "trainers" / "CoOp_AnchorOPT"


@pytest.mark.parametrize("stem", sorted(STAGE2_PUBLISHED))
def test_stage2_dataset_configs_merge_and_carry_the_published_numbers(stem):
    n_ctx, epochs, ce, kd, temperature = STAGE2_PUBLISHED[stem]
    per_dataset = CONFIGS / "base2new" / f"{stem}.yaml"
    cfg = build_config(
        str(REPO / "configs" / "datasets" / f"{stem}.yaml"), [str(CONFIGS / "vit_b16.yaml"), str(per_dataset)]
    )
    c = cfg.TRAINER.ANCHOROPT
    assert (c.N_CTX, cfg.OPTIM.MAX_EPOCH, c.PROMPT_CE_WEIGHT, c.KD_WEIGHT, c.KD_TEMPERATURE) == (
        n_ctx,
        epochs,
        ce,
        kd,
        temperature,
    )
    assert yaml.safe_load(per_dataset.read_text()) == {
        "OPTIM": {"MAX_EPOCH": epochs},
        "TRAINER": {
            "ANCHOROPT": {"N_CTX": n_ctx, "PROMPT_CE_WEIGHT": ce, "KD_WEIGHT": kd, "KD_TEMPERATURE": temperature}
        },
    }
    StageIISettings.from_cfg(cfg)  # valid as published


def test_stage2_shared_and_cross_dataset_configs():
    cfg = build_config(config_file=[str(CONFIGS / "vit_b16.yaml"), str(CONFIGS / "cross_dataset.yaml")])
    assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MOMENTUM, cfg.OPTIM.WEIGHT_DECAY) == ("sgd", 0.002, 0.9, 0.0005)
    assert (cfg.OPTIM.LR_SCHEDULER, cfg.OPTIM.WARMUP_EPOCH, cfg.OPTIM.WARMUP_TYPE, cfg.OPTIM.WARMUP_CONS_LR) == (
        "cosine",
        1,
        "constant",
        1e-5,
    )
    assert (cfg.DATALOADER.TRAIN_X.BATCH_SIZE, cfg.DATALOADER.TEST.BATCH_SIZE, cfg.INPUT.INTERPOLATION) == (
        32,
        100,
        "bicubic",
    )
    assert list(cfg.INPUT.TRANSFORMS) == ["random_resized_crop", "random_flip", "normalize"]
    assert (cfg.TRAINER.COOP.PREC, cfg.TRAINER.ANCHOROPT.ANCHOR_LEN, cfg.TRAINER.ANCHOROPT.POSITION_MODE) == (
        "fp16",
        1,
        "learned",
    )
    c = cfg.TRAINER.ANCHOROPT
    assert (c.N_CTX, cfg.OPTIM.MAX_EPOCH, c.PROMPT_CE_WEIGHT, c.KD_WEIGHT, c.KD_TEMPERATURE) == (4, 20, 1.0, 1.0, 1.0)


# ---------------------------------------------------------------- settings an AnchorOPT trainer ignores


@pytest.mark.parametrize("trainer", ["CoOp_AnchorOPT", "CoCoOp_AnchorOPT", "MaPLe_AnchorOPT", "DePT_AnchorOPT"])
def test_baseline_context_settings_are_reported_when_set_but_ignored(trainer):
    node = TRAINER_REGISTRY.get(trainer).PREC_KEY.split(".")[1]  # COOP, COCOOP, MAPLE
    assert ignored_setting_warnings(build_config(), node, trainer) == []  # defaults: nothing to say
    cfg = build_config(opts=[f"TRAINER.{node}.N_CTX", "12", f"TRAINER.{node}.CTX_INIT", "a picture of"])
    messages = ignored_setting_warnings(cfg, node, trainer)
    assert len(messages) == 2
    assert (
        f"TRAINER.{node}.N_CTX=12 is ignored by {trainer}" in messages[0]
        and "TRAINER.ANCHOROPT.N_CTX (4)" in messages[0]
    )
    assert f"TRAINER.{node}.CTX_INIT='a picture of' is ignored" in messages[1]
    same = build_config(opts=[f"TRAINER.{node}.N_CTX", "8", "TRAINER.ANCHOROPT.N_CTX", "8"])
    assert ignored_setting_warnings(same, node, trainer) == []  # the value used anyway: no warning


def test_use_anchoropt_is_documented_as_without_effect_and_reported(env, tmp_path):
    messages = ignored_setting_warnings(build_config(opts=["TRAINER.ANCHOROPT.USE_ANCHOROPT", "True"]), "COOP", "X")
    assert messages == [
        "TRAINER.ANCHOROPT.USE_ANCHOROPT has no effect (as in the official code): the trainer decides (--trainer X)"
    ]
    args = env.args(
        "CoOp_AnchorOPT",
        tmp_path / "out",
        "TRAINER.ANCHOROPT.ANCHOR_PATH",
        str(env.stage1),
        "TRAINER.COOP.N_CTX",
        "12",
        "TRAINER.ANCHOROPT.USE_ANCHOROPT",
        "True",
    )
    with pytest.warns(UserWarning) as caught:
        trainer = build_trainer_from_args(args)
    texts = [str(w.message) for w in caught]
    assert any("TRAINER.COOP.N_CTX=12 is ignored by CoOp_AnchorOPT" in t for t in texts)
    assert any("USE_ANCHOROPT has no effect" in t for t in texts)
    assert trainer.model.prompt_learner.n_ctx == 4  # what is used: TRAINER.ANCHOROPT.N_CTX
