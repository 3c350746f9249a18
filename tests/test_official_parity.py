"""Parity with the official AnchorOPT code, against golden values it produced (tests/data/official_parity.pt).

The file was written by ``tools/parity/record_official.py`` from the official trainers' own
``build_model`` / ``forward_backward`` on the seeded tiny CLIP (rounded to fp16 by the official
loader, run in fp32 on the CPU), with fixed images, labels, anchor and Gumbel noise (commit,
patches and settings in its ``meta``). Here our models take the same initial parameters and the
same noise: with ``LEGACY`` they must give the official loss, logits, gradients, updated
parameters and evaluation logits; by default they must differ only by the named fixes.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import clip.model
import pytest
import torch

from anchoropt.backbone.random_clip import build_random_clip
from anchoropt.method.descriptions import encode_descriptions
from anchoropt.method.losses import anchoropt_loss, dept_loss, description_mse
from anchoropt.models.anchor_prompt import AnchorPromptLearner
from anchoropt.models.clip_parts import normalize
from anchoropt.models.cocoop_anchoropt import CoCoOpAnchorOPTCLIP, CoCoOpAnchorOPTPromptLearner
from anchoropt.models.coop import PromptedCLIP
from anchoropt.models.coop_anchoropt import CoOpAnchorOPTCLIP
from anchoropt.models.dept import fuse_logits, head_columns
from anchoropt.models.dept_anchoropt import DePTAnchorOPTCLIP, DePTAnchorOPTPromptLearner
from anchoropt.models.maple_anchoropt import MaPLeAnchorOPTCLIP, MaPLeAnchorOPTPromptLearner
from anchoropt.models.stage2_base import AnchorOPTPromptLearner
from tools.parity.gumbel_replay import replay_gumbel

GOLDEN_FILE = Path(__file__).parent / "data" / "official_parity.pt"
RTOL = 1e-5  # losses
TOLERANCE = 2e-5  # tensors, relative (norm)

# official parameter name (inside its CustomCLIP) -> ours (inside our prompt learner)
NAMES = {
    "ctx": "ctx",
    "ctx_pos_params": "positions.logits",
    "film_lp_img.scale": "head.film_image.scale",
    "film_lp_img.bias": "head.film_image.bias",
    "film_lp_text.scale": "head.film_text.scale",
    "film_lp_text.bias": "head.film_text.bias",
    "linear_probe_proj.weight": "head.linear.weight",
    "linear_probe_proj.bias": "head.linear.bias",
}


def short(official_name: str) -> str:
    """The name inside the official prompt learner (``normal_prompt_learner.ctx`` -> ``ctx``)."""
    head, _, rest = official_name.partition(".")
    return rest if head.endswith("prompt_learner") else official_name


def ours(official_name: str) -> str:
    return NAMES.get(short(official_name), short(official_name))


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(GOLDEN_FILE, weights_only=False)


@pytest.fixture(scope="module")
def parity_clip(golden):
    """The recorder's CLIP: the seeded tiny CLIP with the official loader's fp16 rounding, in fp32."""
    meta = golden["meta"]
    model = build_random_clip(meta["clip_spec"], seed=meta["clip_seed"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clip.model.convert_weights(model)
    model.float()
    rounded = sorted(k for k, v in model.state_dict().items() if not torch.equal(v, before[k]))
    assert rounded == meta["fp16_rounded_keys"]  # the same weights the official run saw
    return model


def settings(golden) -> dict:
    return golden["meta"]["settings"]


def build(kind: str, golden, clip_model, legacy: bool):
    s, inputs = settings(golden), golden["inputs"]
    options = dict(anchor=inputs["anchor"], gumbel_temp=s["GUMBEL_TEMP"], legacy=legacy)
    names, n_ctx, anchor_len = inputs["classnames"], s["N_CTX"], s["ANCHOR_LEN"]
    if kind == "coop":
        return CoOpAnchorOPTCLIP(clip_model, AnchorOPTPromptLearner(clip_model, names, n_ctx, anchor_len, **options))
    if kind == "cocoop":
        learner = CoCoOpAnchorOPTPromptLearner(clip_model, names, n_ctx, anchor_len, **options)
        return CoCoOpAnchorOPTCLIP(clip_model, learner)
    if kind == "maple":
        depth = s["MAPLE_DEPTH"]
        learner = MaPLeAnchorOPTPromptLearner(clip_model, names, n_ctx, anchor_len, prompt_depth=depth, **options)
        return MaPLeAnchorOPTCLIP(clip_model, learner)
    learner = DePTAnchorOPTPromptLearner(clip_model, names, n_ctx, anchor_len, head_type="linear", film=True, **options)
    return DePTAnchorOPTCLIP(clip_model, learner)


def load_initial(model, case: dict) -> None:
    params = dict(model.prompt_learner.named_parameters())
    with torch.no_grad():
        for name, value in case["initial"].items():
            params[ours(name)].copy_(value)


def training_step(kind: str, golden, model) -> dict:
    """Our training step on the recorded inputs and noise: loss, logits, grads, updated parameters."""
    s, inputs, case = settings(golden), golden["inputs"], golden["cases"][kind]
    images, labels = inputs["images"], inputs["labels"]
    learner = model.prompt_learner
    optimizer = torch.optim.SGD(
        [p for p in learner.parameters() if p.requires_grad],
        lr=s["LR"],
        momentum=s["MOMENTUM"],
        weight_decay=s["WEIGHT_DECAY"],
    )
    model.train()
    with torch.no_grad():
        anchor_text = normalize(model.anchor_text_features())
    with replay_gumbel(case["train_noise"]):
        if kind == "dept":
            out = model.dept_outputs(images, labels=labels)
            task, _ = dept_loss(out.sim, labels, out.head, out.head_labels, golden["meta"]["dept"]["WEIGHT"])
            loss, normal, anchor = s["PROMPT_CE_WEIGHT"] * task, out.sim, None
        else:
            normal, anchor = model.branch_logits(images, None, anchor_text)
            loss, _ = anchoropt_loss(normal, anchor, labels, s["PROMPT_CE_WEIGHT"], s["KD_WEIGHT"], s["KD_TEMPERATURE"])
    optimizer.zero_grad()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in learner.named_parameters() if p.grad is not None}
    optimizer.step()
    return {
        "loss": float(loss.detach()),
        "logits": normal.detach(),
        "logits_anchor": None if anchor is None else anchor.detach(),
        "grads": grads,
        "params": {n: p.detach().clone() for n, p in learner.named_parameters()},
    }


def evaluation_logits(kind: str, golden, model, noise) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = golden["inputs"]
    model.eval()
    with torch.no_grad(), replay_gumbel(noise):
        anchor_text = normalize(model.anchor_text_features())
        if kind != "dept":
            return model.branch_logits(inputs["images"], None, anchor_text)
        columns = head_columns(inputs["classnames"], inputs["classnames"])
        out = model.dept_outputs(inputs["images"], columns=columns)
        fusion = SimpleNamespace(weight=golden["meta"]["dept"]["WEIGHT"], test_time_fusion=True)
        return fuse_logits(out.sim, out.head, columns, fusion), model.anchor_logits(out.image_features, anchor_text)


def close(actual: torch.Tensor, expected: torch.Tensor, what: str, tolerance: float = TOLERANCE) -> None:
    """Relative error ||actual - expected|| / ||expected|| within `tolerance` (fp32 sums in another order)."""
    assert actual.shape == expected.shape, what
    error = float((actual.double() - expected.double()).norm() / expected.double().norm().clamp(min=1e-12))
    assert error <= tolerance, f"{what}: relative error {error:.3g} (tolerance {tolerance:g})"


# ---- LEGACY reproduces the official algorithm -------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["coop", "cocoop", "maple", "dept"])
def test_legacy_training_step_and_evaluation_match_the_official_code(kind, golden, parity_clip):
    case = golden["cases"][kind]
    model = build(kind, golden, parity_clip, legacy=True)
    load_initial(model, case)
    step = training_step(kind, golden, model)
    assert step["loss"] == pytest.approx(case["loss"], rel=RTOL)
    if kind != "dept":
        close(step["logits"], case["logits"], "normal logits")
        close(step["logits_anchor"], case["logits_anchor"], "anchor logits")
    # the same parameters get gradients (CoCoOp's Θ and meta-net get none, as in the official code)
    assert sorted(step["grads"]) == sorted(ours(n) for n in case["grads"])
    for name, grad in case["grads"].items():
        close(step["grads"][ours(name)], grad, f"gradient of {name}")
    for name, value in case["updated"].items():
        if ours(name) in step["params"]:  # (DePT also lists the frozen anchor, which has no gradient)
            initial = case["initial"][short(name)]
            close(step["params"][ours(name)], value, f"{name} after the step", 1e-6)
            # the update itself (p_after - p_before loses digits to cancellation in fp32)
            close(step["params"][ours(name)] - initial, value - initial, f"update of {name}", 1e-4)
    normal, anchor = evaluation_logits(kind, golden, model, case["eval_noise"])
    close(normal, case["eval_logits"], "evaluation logits")
    close(anchor, case["eval_logits_anchor"], "evaluation anchor logits")


def test_legacy_cocoop_trains_v_alone_as_the_official_code(golden, parity_clip):
    case = golden["cases"]["cocoop"]
    assert case["optimised"] == ["normal_prompt_learner.ctx"]  # the recorded fact
    model = build("cocoop", golden, parity_clip, legacy=False)
    load_initial(model, case)
    step = training_step("cocoop", golden, model)
    assert {"positions.logits", "meta_net.linear1.weight"} <= set(step["grads"])  # default: Θ and meta-net learn


def test_stage1_matches_the_official_code(golden, parity_clip):
    case, inputs = golden["cases"]["stage1"], golden["inputs"]
    names = inputs["classnames"]
    learner = AnchorPromptLearner(parity_clip, names, settings(golden)["ANCHOR_LEN"])
    with torch.no_grad():
        learner.anchor_ctx_1.copy_(case["initial"]["anchor_ctx_1"])
    model = PromptedCLIP(parity_clip, learner)
    sentences = [inputs["descriptions"][name.replace("_", " ")] for name in names]
    described = encode_descriptions(model.text_encoder, sentences)
    close(described.features.view_as(case["description_features"]), case["description_features"], "descriptions")
    s = settings(golden)
    optimizer = torch.optim.SGD(
        [learner.anchor_ctx_1], lr=s["LR"], momentum=s["MOMENTUM"], weight_decay=s["WEIGHT_DECAY"]
    )
    features = model.text_features()
    close(features.detach(), case["anchor_features"], "anchor-prompt features")
    loss = s["ANCHOR_MSE_WEIGHT"] * description_mse(features, described)
    loss.backward()
    assert float(loss) == pytest.approx(case["loss"], rel=1e-6)
    official_grad = case["grads"]["anchor_prompt_learner.anchor_ctx_1"]
    close(learner.anchor_ctx_1.grad, official_grad, "gradient")
    optimizer.step()
    delta = case["updated"]["anchor_prompt_learner.anchor_ctx_1"] - case["initial"]["anchor_ctx_1"]
    close(learner.anchor_ctx_1.detach() - case["initial"]["anchor_ctx_1"], delta, "update")


# ---- the default differs only by the named fixes ----------------------------------------------------------------
def official_readout(monkeypatch) -> None:
    """Our default model with only the read-out moved to the official EOT - ANCHOR_LEN."""
    monkeypatch.setattr(
        AnchorOPTPromptLearner, "readout_index", property(lambda self: self.layout.eot_index - self.anchor_len)
    )


def reload(kind: str, golden, clip_model, case):
    model = build(kind, golden, clip_model, legacy=False)
    load_initial(model, case)
    return model


@pytest.mark.parametrize("kind", ["coop", "cocoop", "dept"])
def test_default_training_differs_from_the_official_code_only_by_the_eot_readout(
    kind, golden, parity_clip, monkeypatch
):
    case = golden["cases"][kind]
    default = training_step(kind, golden, reload(kind, golden, parity_clip, case))
    assert abs(default["loss"] - case["loss"]) > 1e-3  # reading at EOT is a real change
    official_readout(monkeypatch)
    moved = training_step(kind, golden, reload(kind, golden, parity_clip, case))
    assert moved["loss"] == pytest.approx(case["loss"], rel=RTOL)
    close(moved["logits"], case["logits"] if kind != "dept" else moved["logits"], "normal logits")


def test_default_maple_also_differs_by_the_deep_anchor_read(golden, parity_clip, monkeypatch):
    case = golden["cases"]["maple"]
    assert case["official_found_anchor"]  # the official ``== 1.0`` test found the anchor's slot in this sample
    official_readout(monkeypatch)
    step = training_step("maple", golden, reload("maple", golden, parity_clip, case))
    # read at slot 1 + j with P's straight-through entries instead of at j with a hard index
    assert abs(step["loss"] - case["loss"]) > 1e-3


@pytest.mark.parametrize("kind", ["coop", "cocoop", "maple", "dept"])
def test_default_evaluation_draws_no_noise(kind, golden, parity_clip):
    model = reload(kind, golden, parity_clip, golden["cases"][kind])
    first = evaluation_logits(kind, golden, model, [])  # replay_gumbel([]) fails if any noise is drawn
    second = evaluation_logits(kind, golden, model, [])
    assert torch.equal(first[0], second[0])


def test_golden_file_is_small_and_names_its_source(golden):
    meta = golden["meta"]
    assert GOLDEN_FILE.stat().st_size < 400 * 1024
    assert len(meta["official_commit"]) == 40 and meta["patches"]
    assert set(golden["cases"]) == {"stage1", "coop", "cocoop", "maple", "dept"}
