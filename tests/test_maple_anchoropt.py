"""MaPLe + AnchorOPT: P at every prompted layer, the anchor state carried from slot 1+j, shared Stage II trainer."""

import json
import math

import pytest
import torch

import trainers  # noqa: F401  (registers the trainers and their config nodes)
from anchoropt.backbone import causal_attention_mask, residual_block_forward
from anchoropt.config import build_config
from anchoropt.engine.checkpoint import load_checkpoint
from anchoropt.method.anchor_checkpoint import save_anchor
from anchoropt.method.positions import order_matrix
from anchoropt.models.coop_anchoropt import CoOpAnchorOPTCLIP
from anchoropt.models.deep_prompts import DeepPromptTextEncoder
from anchoropt.models.maple_anchoropt import MaPLeAnchorOPTCLIP, MaPLeAnchorOPTPromptLearner, carried_anchor_state
from anchoropt.models.stage2_base import AnchorOPTPromptLearner
from tests.support.anchoropt_runs import record_method
from tests.support.data_layouts import dataset_writer  # noqa: F401  (fixture)
from tests.support.engine_runs import REPO, run_train
from tests.support.maple_fixtures import block_inputs, deep_clip, deep_clip_file, images, randomize_  # noqa: F401

CLASSES = ["dog", "red car", "golden_retriever"]
M = 4


def anchor_tokens(seed=3):
    return torch.randn(1, 64, generator=torch.Generator().manual_seed(seed)) * 0.5


def learner_for(clip_model, depth=3, mode="learned", n_ctx=M, **kw):
    learner = MaPLeAnchorOPTPromptLearner(
        clip_model,
        CLASSES,
        n_ctx=n_ctx,
        anchor_len=1,
        anchor=anchor_tokens(),
        prompt_depth=depth,
        position_mode=mode,
        **kw,
    )
    return randomize_(learner)


def text_layer_inputs(clip_model, learner, matrix=None):
    model = MaPLeAnchorOPTCLIP(clip_model, learner)
    seen, handles = block_inputs(clip_model.transformer.resblocks)
    try:
        with torch.no_grad():
            model.encode_text_prompts(learner.text_prompts(matrix))
    finally:
        for h in handles:
            h.remove()
    return seen


def previous_output(clip_model, seen, layer):
    """What layer ``layer - 1`` handed on, recomputed from its recorded input."""
    x = seen[layer - 1]
    return residual_block_forward(
        clip_model.transformer.resblocks[layer - 1], x, causal_attention_mask(x.shape[0], "cpu")
    )


@pytest.mark.parametrize("mode, anchor_slot", [("anchor_front", 0), ("anchor_middle", 2), ("anchor_end", 4)])
def test_fixed_positions_place_soft_tokens_and_carry_the_anchor_from_slot_1_plus_j(deep_clip, mode, anchor_slot):
    depth = 3
    learner = learner_for(deep_clip, depth, mode)
    seen = text_layer_inputs(deep_clip, learner)
    soft_slots = [s for s in range(M + 1) if s != anchor_slot]
    pos = deep_clip.positional_embedding
    with torch.no_grad():
        # Input layer: P·[V; A] after SOS.
        assert torch.allclose(seen[0][1 + anchor_slot], (learner.anchor[0] + pos[1 + anchor_slot]).expand(3, -1))
        for source, slot in enumerate(soft_slots):
            assert torch.allclose(seen[0][1 + slot], (learner.ctx[source] + pos[1 + slot]).expand(3, -1))
        for layer in range(1, 4):
            before = previous_output(deep_clip, seen, layer)
            if layer < depth:
                for source, slot in enumerate(soft_slots):
                    assert torch.equal(
                        seen[layer][1 + slot], learner.compound_prompts_text[layer - 1][source].expand(3, -1)
                    )
                carried = seen[layer][1 + anchor_slot]
                torch.testing.assert_close(carried, before[1 + anchor_slot], rtol=0, atol=1e-6)
                assert not torch.allclose(carried, before[anchor_slot], atol=1e-3)  # not one position too early
            else:
                torch.testing.assert_close(seen[layer][1 : 1 + M + 1], before[1 : 1 + M + 1], rtol=0, atol=1e-6)
            torch.testing.assert_close(seen[layer][M + 2 :], before[M + 2 :], rtol=0, atol=1e-6)  # class, ".", EOT


def test_sampled_orders_without_or_with_a_repeated_anchor(deep_clip):
    learner = learner_for(deep_clip, depth=2, n_ctx=2)
    # Rows are slots, columns sources [V1, V2, A]: "V1 V2 V1" (anchor dropped), "A V1 A" (anchor twice).
    no_anchor = order_matrix([0, 1, 0])
    seen = text_layer_inputs(deep_clip, learner, no_anchor)
    soft = learner.compound_prompts_text[0]
    for slot, source in enumerate([0, 1, 0]):
        assert torch.equal(seen[1][1 + slot], soft[source].expand(3, -1))  # the soft tokens alone

    twice = order_matrix([2, 0, 2])
    seen = text_layer_inputs(deep_clip, learner, twice)
    before = previous_output(deep_clip, seen, 1)
    assert torch.equal(seen[1][2], soft[0].expand(3, -1))
    for slot in (0, 2):  # both anchor slots carry the state of the first slot holding the anchor
        torch.testing.assert_close(seen[1][1 + slot], before[1], rtol=0, atol=1e-6)


def test_carried_state_is_read_through_p_so_its_gradient_reaches_theta():
    hidden = torch.randn(2, 6, 5)
    logits = torch.zeros(3, 3, requires_grad=True)
    soft = torch.nn.functional.softmax(logits, dim=-1)
    hard = order_matrix([1, 2, 0])
    matrix = hard - soft.detach() + soft  # straight-through, values exactly those of `hard`
    state = carried_anchor_state(hidden, matrix, num_ctx=2)
    assert torch.equal(state, hidden[:, 2:3])  # A1 is in slot 1 -> position 2
    state.sum().backward()
    assert logits.grad.abs().sum() > 0


def test_legacy_read_is_one_position_early_and_hard_so_no_gradient_reaches_theta_through_it():
    hidden = torch.randn(2, 6, 5)
    logits = torch.zeros(3, 3, requires_grad=True)
    soft = torch.nn.functional.softmax(logits, dim=-1)
    matrix = order_matrix([1, 2, 0]) - soft.detach() + soft
    state = carried_anchor_state(hidden, matrix, num_ctx=2, slot_start=0, hard=True)
    assert torch.equal(state, hidden[:, 1:2])  # A1 is in slot 1 -> read at position 1, the official index
    assert not state.requires_grad  # the hard index: nothing reaches Θ through the read
    missing = carried_anchor_state(hidden, order_matrix([0, 1, 0]), num_ctx=2, slot_start=0, hard=True)
    assert not missing.any()  # no slot holds the anchor: zeros, as the default


def test_legacy_model_carries_the_state_of_the_position_before_the_anchor_slot(deep_clip):
    depth = 3
    learner = learner_for(deep_clip, depth, "anchor_middle", legacy=True)  # V1 V2 A V3 V4: anchor in slot 2
    seen = text_layer_inputs(deep_clip, learner)
    for layer in range(1, depth):
        before = previous_output(deep_clip, seen, layer)
        torch.testing.assert_close(seen[layer][1 + 2], before[2], rtol=0, atol=1e-6)  # position 2 = slot 1's token


def anchors_two(seed=5):
    return torch.randn(2, 64, generator=torch.Generator().manual_seed(seed)) * 0.5


@pytest.mark.parametrize("legacy", [False, True])
def test_anchor_len_two_carries_each_anchor_token_from_its_own_slot(deep_clip, legacy):
    learner = randomize_(
        MaPLeAnchorOPTPromptLearner(
            deep_clip, CLASSES, n_ctx=M, anchor_len=2, anchor=anchors_two(), prompt_depth=3, legacy=legacy
        )
    )
    # slots <- sources [V1..V4, A1, A2]: "A2 V1 A1 V2 A2 V3": A1 in slot 2, A2 first in slot 0 (and again in 4)
    order = [5, 0, 4, 1, 5, 2]
    seen = text_layer_inputs(deep_clip, learner, order_matrix(order))
    offset = 0 if legacy else 1  # LEGACY reads one position early
    with torch.no_grad():
        assert torch.allclose(seen[0][1 + 2], (learner.anchor[0] + deep_clip.positional_embedding[3]).expand(3, -1))
        for layer in (1, 2):
            before = previous_output(deep_clip, seen, layer)
            for slot, source in enumerate(order):
                if source < M:
                    assert torch.equal(
                        seen[layer][1 + slot], learner.compound_prompts_text[layer - 1][source].expand(3, -1)
                    )
            torch.testing.assert_close(seen[layer][1 + 2], before[offset + 2], rtol=0, atol=1e-6)  # A1
            for slot in (0, 4):  # A2, read where it first appears
                torch.testing.assert_close(seen[layer][1 + slot], before[offset + 0], rtol=0, atol=1e-6)
    model = MaPLeAnchorOPTCLIP(deep_clip, learner.train())
    normal, _ = model.branch_logits(images())
    normal.sum().backward()
    assert learner.positions.logits.grad.abs().sum() > 0 and learner.anchor.grad is None


def test_depth_one_identity_without_vision_prompts_is_coop_anchoropt(deep_clip):
    maple = learner_for(deep_clip, depth=1, mode="identity", vision_prompts=False)
    coop = AnchorOPTPromptLearner(
        deep_clip, CLASSES, n_ctx=M, anchor_len=1, anchor=anchor_tokens(), position_mode="identity"
    )
    with torch.no_grad():
        coop.ctx.copy_(maple.ctx)
    ours, theirs = MaPLeAnchorOPTCLIP(deep_clip, maple), CoOpAnchorOPTCLIP(deep_clip, coop)
    with torch.no_grad():
        torch.testing.assert_close(ours.prompt_state(), theirs.prompt_state(), rtol=0, atol=1e-6)
        anchor_text = theirs.anchor_text_features()
        torch.testing.assert_close(ours.anchor_text_features(), anchor_text, rtol=0, atol=1e-6)
        for a, b in zip(
            ours.branch_logits(images(), anchor_text=anchor_text),
            theirs.branch_logits(images(), anchor_text=anchor_text),
        ):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_gradients_reach_v_theta_and_maple_prompts_only(deep_clip):
    learner = learner_for(deep_clip, depth=3)
    model = MaPLeAnchorOPTCLIP(deep_clip, learner)
    normal, anchor = model.branch_logits(images(), anchor_text=model.anchor_text_features())
    assert not anchor.requires_grad  # the anchor branch is the frozen, unprompted CLIP
    normal.sum().backward()
    assert all(p.grad is None for p in deep_clip.parameters())
    grads = {name: p.grad for name, p in learner.named_parameters()}
    assert {"ctx", "positions.logits", "proj.weight", "compound_prompts_text.1"} <= set(grads)
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())
    assert "anchor" not in grads and learner.anchor.grad is None


@pytest.mark.parametrize("mode", ["learned", "sinkhorn"])
def test_eval_prompts_are_deterministic(deep_clip, mode):
    model = MaPLeAnchorOPTCLIP(deep_clip, learner_for(deep_clip, depth=3, mode=mode).eval())
    with torch.no_grad():
        assert torch.equal(model.prompt_state(), model.prompt_state())


def test_legacy_switch_reads_before_eot_and_samples_at_evaluation(deep_clip):
    learner = learner_for(deep_clip, depth=3, legacy=True).eval()
    prompts = learner.text_prompts()
    assert torch.equal(prompts.eot_index, learner.layout.eot_index - 1)  # the "." of the official code
    model = MaPLeAnchorOPTCLIP(deep_clip, learner)
    with torch.no_grad():
        states = [model.prompt_state() for _ in range(4)]
    assert any(not torch.equal(states[0], s) for s in states[1:])


# ---- configs ----------------------------------------------------------------------------------------------------
PUBLISHED = {  # N_CTX / epochs / CE weight / KD weight / KD temperature (MaPLe column)
    "imagenet": (8, 5, 1, 100, 1),
    "caltech101": (8, 10, 10, 1000, 2),
    "oxford_pets": (8, 10, 1, 10, 0.5),
    "stanford_cars": (4, 20, 10, 0, 0),
    "oxford_flowers": (4, 20, 10, 100, 2),
    "food101": (8, 10, 1, 100, 1),
    "fgvc_aircraft": (4, 10, 1, 10, 4),
    "sun397": (4, 20, 10, 1000, 4),
    "dtd": (4, 20, 1, 10, 4),
    "eurosat": (4, 20, 1, 1, 2),
    "ucf101": (8, 10, 1, 1, 2),
}


@pytest.mark.parametrize("stem", sorted(PUBLISHED))
def test_base2new_configs_hold_the_published_settings(stem):
    cfg = build_config(
        f"{REPO}/configs/datasets/{stem}.yaml",
        [
            f"{REPO}/configs/trainers/MaPLe_AnchorOPT/vit_b16.yaml",
            f"{REPO}/configs/trainers/MaPLe_AnchorOPT/base2new/{stem}.yaml",
        ],
    )
    a = cfg.TRAINER.ANCHOROPT
    assert (a.N_CTX, cfg.OPTIM.MAX_EPOCH, a.PROMPT_CE_WEIGHT, a.KD_WEIGHT, a.KD_TEMPERATURE) == PUBLISHED[stem]
    assert (
        cfg.OPTIM.NAME,
        cfg.OPTIM.LR,
        cfg.DATALOADER.TRAIN_X.BATCH_SIZE,
        cfg.TRAINER.MAPLE.PROMPT_DEPTH,
        a.ANCHOR_LEN,
        a.GUMBEL_TEMP,
        cfg.OPTIM.WARMUP_EPOCH,
        cfg.OPTIM.WARMUP_CONS_LR,
    ) == ("sgd", 0.0035, 4, 9, 1, 1.0, 1, 1e-5)


def test_maple_configs_hold_maple_s_settings():
    cfg = build_config("", [f"{REPO}/configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml"])
    m = cfg.TRAINER.MAPLE
    assert (
        m.N_CTX,
        m.CTX_INIT,
        m.PROMPT_DEPTH,
        cfg.OPTIM.LR,
        cfg.OPTIM.MAX_EPOCH,
        cfg.DATALOADER.TRAIN_X.BATCH_SIZE,
    ) == (2, "a photo of a", 9, 0.0035, 5, 4)
    cross = build_config("", [f"{REPO}/configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml"])
    assert (cross.TRAINER.MAPLE.PROMPT_DEPTH, cross.OPTIM.LR) == (3, 0.0026)


# ---- trainer through train.py -----------------------------------------------------------------------------------
def run_args(data_root, clip_file, out, *extra, flags=()):
    return [
        *flags,
        "--root",
        str(data_root),
        "--seed",
        "1",
        "--trainer",
        "MaPLe_AnchorOPT",
        "--output-dir",
        str(out),
        "--dataset-config-file",
        "configs/datasets/caltech101.yaml",
        "--config-file",
        "configs/trainers/MaPLe_AnchorOPT/vit_b16.yaml",
        "--config-file",
        "configs/trainers/MaPLe_AnchorOPT/base2new/caltech101.yaml",
        "MODEL.BACKBONE.PATH",
        str(clip_file),
        "INPUT.SIZE",
        "(32, 32)",
        "DATALOADER.NUM_WORKERS",
        "0",
        "TRAINER.MAPLE.PREC",
        "fp32",
        "TRAINER.MAPLE.PROMPT_DEPTH",
        "3",
        "OPTIM.NAME",
        "adam",
        "OPTIM.LR",
        "0.01",
        "OPTIM.MAX_EPOCH",
        "3",
        "DATASET.NUM_SHOTS",
        "4",
        "DATALOADER.TEST.BATCH_SIZE",
        "2",
        # Fewer tokens and milder weights than the Caltech101 file: the tiny random CLIP learns in 3 short epochs.
        "TRAINER.ANCHOROPT.N_CTX",
        "2",
        "TRAINER.ANCHOROPT.PROMPT_CE_WEIGHT",
        "1.0",
        "TRAINER.ANCHOROPT.KD_WEIGHT",
        "1.0",
        *extra,
    ]


@pytest.mark.slow  # end to end through train.py subprocesses or scripts
def test_trains_on_base_and_scores_new_classes_with_the_ensemble(dataset_writer, deep_clip_file, tmp_path, monkeypatch):
    info = dataset_writer("Caltech101")
    n_base = math.ceil(info.num_classes / 2)
    anchor_file = save_anchor(tmp_path / "anchor.pt", anchor_tokens(), info.classnames[:n_base], {})
    out = tmp_path / "base"
    assert (
        run_train(
            run_args(
                dataset_writer.root,
                deep_clip_file,
                out,
                "DATASET.SUBSAMPLE_CLASSES",
                "base",
                "TRAINER.ANCHOROPT.ANCHOR_PATH",
                str(anchor_file),
            )
        )
        == 0
    )
    base = json.loads((out / "results.json").read_text())
    assert (base["trainer"], base["num_classes"], base["scoring"]["normal_classes"]) == (
        "MaPLe_AnchorOPT",
        n_base,
        n_base,
    )
    assert base["metrics"]["accuracy"] > 100 / n_base + 20

    ckpt_file = out / "prompt_learner" / "model.pth.tar-3"
    state = load_checkpoint(str(ckpt_file))["state_dict"]
    assert set(state) == {
        "ctx",
        "anchor",
        "positions.logits",
        "proj.weight",
        "proj.bias",
        "compound_prompts_text.0",
        "compound_prompts_text.1",
        "compound_prompt_projections.0.weight",
        "compound_prompt_projections.0.bias",
        "compound_prompt_projections.1.weight",
        "compound_prompt_projections.1.bias",
    }
    assert torch.equal(state["anchor"], anchor_tokens())  # the frozen Stage I anchor, unchanged
    assert ckpt_file.stat().st_size < deep_clip_file.stat().st_size / 20

    # New classes, anchor from the checkpoint: every class scores with the ensemble; prompts encoded once.
    calls = record_method(monkeypatch, DeepPromptTextEncoder, "forward")
    new_out = tmp_path / "new"
    flags = ["--eval-only", "--model-dir", str(out), "--load-epoch", "3"]
    assert (
        run_train(
            run_args(dataset_writer.root, deep_clip_file, new_out, "DATASET.SUBSAMPLE_CLASSES", "new", flags=flags)
        )
        == 0
    )
    new = json.loads((new_out / "results.json").read_text())
    n_new = info.num_classes - n_base
    assert (new["num_classes"], new["scoring"]["ensemble_classes"], new["scoring"]["seen_classes"]) == (n_new, n_new, 0)
    assert new["num_samples"] > 2 and len(calls) == 2  # normal prompts once + anchor prompts once
