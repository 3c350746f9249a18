"""MaPLe: deep prompts driven through CLIP's own blocks, placed per layer, exact truncation, trainer runs."""

import json
import math

import clip
import pytest
import torch
import torch.nn.functional as F

from anchoropt.backbone import Precision, causal_attention_mask, residual_block_forward
from anchoropt.engine.checkpoint import load_checkpoint
from anchoropt.errors import ConfigError
from anchoropt.models.clip_parts import ImageEncoder
from anchoropt.models.coop import CoOpPromptLearner, PromptedCLIP
from anchoropt.models.deep_prompts import DeepPromptTextEncoder, PromptedImageEncoder
from anchoropt.models.maple import MaPLeCLIP, MaPLePromptLearner
from tests.support.anchoropt_runs import record_method
from tests.support.data_layouts import dataset_writer  # noqa: F401  (fixture)
from tests.support.engine_runs import run_train
from tests.support.maple_fixtures import block_inputs, deep_clip, deep_clip_file, images, randomize_  # noqa: F401

CLASSES = ["dog", "red car", "golden_retriever"]


# ---- prompts ----------------------------------------------------------------------------------------------------
def test_prompt_is_maple_s_learned_first_words_then_fixed_words(deep_clip):
    learner = MaPLePromptLearner(deep_clip, CLASSES, n_ctx=2, ctx_init="a photo of a", prompt_depth=3)
    layout = learner.layout
    for row, name in enumerate(CLASSES):
        expected = clip.tokenize(f"a photo of a {name.replace('_', ' ')}.")[0, : layout.length]
        slots = layout.slot_index[row] >= 0
        assert slots.nonzero().flatten().tolist() == [1, 2]  # right after SOS, as MaPLe's deep slots assume
        assert torch.equal(layout.token_ids[row][~slots], expected[~slots].long())
    words = deep_clip.token_embedding(clip.tokenize("a photo")[0, 1:3])
    assert torch.equal(learner.ctx.detach(), words)
    assert learner.ctx.shape == (2, 64) and learner.compound_prompts_text[0].shape == (2, 64)
    assert learner.proj.weight.shape == (128, 64) and len(learner.compound_prompt_projections) == 2
    # MaPLe clones one initialised layer for all deeper projections.
    assert torch.equal(learner.compound_prompt_projections[0].weight, learner.compound_prompt_projections[1].weight)

    whole = MaPLePromptLearner(deep_clip, CLASSES, n_ctx=4, ctx_init="a photo of a", prompt_depth=1)
    assert whole.layout.template == "{ctx} {class}."
    random_ctx = MaPLePromptLearner(deep_clip, CLASSES, n_ctx=6, ctx_init="a photo of a", prompt_depth=1)
    assert random_ctx.layout.prompts[0] == "X X X X X X dog." and random_ctx.ctx.std() < 0.05


def test_bad_depth_and_context_are_config_errors(deep_clip):
    with pytest.raises(ConfigError, match=r"TRAINER.MAPLE.PROMPT_DEPTH=5: expected 1..4"):
        MaPLePromptLearner(deep_clip, CLASSES, prompt_depth=5)
    with pytest.raises(ConfigError, match="TRAINER.MAPLE.PROMPT_DEPTH=0"):
        MaPLePromptLearner(deep_clip, CLASSES, prompt_depth=0)
    with pytest.raises(ConfigError, match="N_CTX must be at least 1"):
        MaPLePromptLearner(deep_clip, CLASSES, n_ctx=0)


# ---- equivalences -----------------------------------------------------------------------------------------------
def test_depth_one_without_vision_prompts_is_coop(deep_clip):
    maple = MaPLePromptLearner(deep_clip, CLASSES, n_ctx=4, ctx_init="", prompt_depth=1, vision_prompts=False)
    coop = CoOpPromptLearner(deep_clip, CLASSES, n_ctx=4)
    randomize_(maple)
    with torch.no_grad():
        coop.ctx.copy_(maple.ctx)
    maple_model, coop_model = MaPLeCLIP(deep_clip, maple), PromptedCLIP(deep_clip, coop)
    assert sorted(maple.state_dict()) == ["ctx"]
    with torch.no_grad():
        torch.testing.assert_close(maple_model.text_features(), coop_model.text_features(), rtol=0, atol=1e-6)
        torch.testing.assert_close(maple_model(images()), coop_model(images()), rtol=0, atol=1e-5)


def test_initial_shallow_prompt_is_clip_s_own_sentence(deep_clip):
    """Depth 1, context from "a photo of a": the text features are CLIP's encode_text of the sentence."""
    model = MaPLeCLIP(deep_clip, MaPLePromptLearner(deep_clip, CLASSES, n_ctx=2, prompt_depth=1))
    sentences = [f"a photo of a {c.replace('_', ' ')}." for c in CLASSES]
    with torch.no_grad():
        expected = F.normalize(deep_clip.encode_text(clip.tokenize(sentences)), dim=-1)
        torch.testing.assert_close(model.text_features(), expected, rtol=0, atol=1e-5)


def test_unprompted_image_encoder_is_clip_s(deep_clip):
    with torch.no_grad():
        expected = F.normalize(deep_clip.encode_image(images()), dim=-1)
        torch.testing.assert_close(PromptedImageEncoder(deep_clip)(images()), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(ImageEncoder(deep_clip)(images()), expected, rtol=0, atol=1e-5)


def reference_text_features(clip_model, learner):
    """MaPLe's text side at CLIP's full 77 positions with CLIP's own block forward (its 77x77 mask)."""
    prompts = learner.text_prompts()
    n, length, width = prompts.embeds.shape
    pad = clip_model.token_embedding(torch.zeros(n, 77 - length, dtype=torch.long))
    x = (torch.cat([prompts.embeds, pad], 1) + clip_model.positional_embedding).permute(1, 0, 2)
    for i, block in enumerate(clip_model.transformer.resblocks):
        if 1 <= i < learner.prompt_depth:
            x = torch.cat(
                [x[:1], learner.compound_prompts_text[i - 1].unsqueeze(1).expand(-1, n, -1), x[1 + learner.n_ctx :]]
            )
        x = block(x)
    x = clip_model.ln_final(x.permute(1, 0, 2))[torch.arange(n), prompts.eot_index] @ clip_model.text_projection
    return F.normalize(x, dim=-1)


def reference_image_features(clip_model, learner, image):
    """MaPLe's vision side: prompts appended after the positional embedding, last K rewritten per layer."""
    v = clip_model.visual
    k = learner.n_ctx
    x = v.conv1(image).flatten(2).permute(0, 2, 1)
    x = torch.cat([v.class_embedding.expand(x.shape[0], 1, -1), x], 1) + v.positional_embedding
    x = torch.cat([x, learner.proj(learner.ctx).expand(x.shape[0], -1, -1)], 1)
    x = v.ln_pre(x).permute(1, 0, 2)
    for i, block in enumerate(v.transformer.resblocks):
        if 1 <= i < learner.prompt_depth:
            deep = learner.compound_prompt_projections[i - 1](learner.compound_prompts_text[i - 1])
            x = torch.cat([x[:-k], deep.unsqueeze(1).expand(-1, x.shape[1], -1)])
        x = block(x)
    return F.normalize(v.ln_post(x[0]) @ v.proj, dim=-1)


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_deep_prompts_match_full_length_reference(deep_clip, depth):
    learner = randomize_(MaPLePromptLearner(deep_clip, CLASSES, n_ctx=2, prompt_depth=depth))
    model = MaPLeCLIP(deep_clip, learner)
    with torch.no_grad():
        # Truncated at the last EOT (here far below 77 positions), the features are those of the full sequence.
        assert learner.layout.length < 20
        torch.testing.assert_close(
            model.text_features(), reference_text_features(deep_clip, learner), rtol=0, atol=1e-5
        )
        torch.testing.assert_close(
            model.image_features(images()), reference_image_features(deep_clip, learner, images()), rtol=0, atol=1e-5
        )
        shallow = MaPLeCLIP(deep_clip, randomize_(MaPLePromptLearner(deep_clip, CLASSES, n_ctx=2, prompt_depth=1)))
        assert not torch.allclose(model.text_features(), shallow.text_features(), atol=1e-3)


def test_deep_prompts_sit_in_their_slots_at_each_layer(deep_clip):
    depth, k = 3, 2
    learner = randomize_(MaPLePromptLearner(deep_clip, CLASSES, n_ctx=k, prompt_depth=depth))
    model = MaPLeCLIP(deep_clip, learner)
    text_blocks, vision_blocks = deep_clip.transformer.resblocks, deep_clip.visual.transformer.resblocks
    text_in, h1 = block_inputs(text_blocks)
    vision_in, h2 = block_inputs(vision_blocks)
    try:
        with torch.no_grad():
            model.text_features()
            model.image_features(images())
    finally:
        for h in h1 + h2:
            h.remove()
    with torch.no_grad():
        length = learner.layout.length
        pos = deep_clip.positional_embedding
        assert torch.allclose(text_in[0][1 : 1 + k], (learner.ctx + pos[1 : 1 + k]).unsqueeze(1).expand(-1, 3, -1))
        assert torch.equal(
            vision_in[0][-k:], deep_clip.visual.ln_pre(learner.proj(learner.ctx)).unsqueeze(1).expand(-1, 3, -1)
        )
        for i in range(1, 4):
            prev_text = residual_block_forward(text_blocks[i - 1], text_in[i - 1], causal_attention_mask(length, "cpu"))
            prev_vision = residual_block_forward(vision_blocks[i - 1], vision_in[i - 1])
            if i < depth:
                text_slots = learner.compound_prompts_text[i - 1].unsqueeze(1).expand(-1, 3, -1)
                vision_slots = learner.compound_prompt_projections[i - 1](learner.compound_prompts_text[i - 1])
                assert torch.equal(text_in[i][1 : 1 + k], text_slots)
                assert torch.equal(vision_in[i][-k:], vision_slots.unsqueeze(1).expand(-1, 3, -1))
            else:  # past the prompt depth the previous layer's outputs pass through
                torch.testing.assert_close(text_in[i][1 : 1 + k], prev_text[1 : 1 + k])
                torch.testing.assert_close(vision_in[i][-k:], prev_vision[-k:])
            # Every other position is always the previous layer's output.
            torch.testing.assert_close(text_in[i][1 + k :], prev_text[1 + k :], rtol=0, atol=1e-6)
            torch.testing.assert_close(text_in[i][:1], prev_text[:1], rtol=0, atol=1e-6)
            torch.testing.assert_close(vision_in[i][:-k], prev_vision[:-k], rtol=0, atol=1e-6)


def test_only_the_prompt_learner_gets_gradients(deep_clip):
    learner = MaPLePromptLearner(deep_clip, CLASSES, n_ctx=2, prompt_depth=3)
    model = MaPLeCLIP(deep_clip, learner)
    F.cross_entropy(model(images()), torch.tensor([0, 1, 2])).backward()
    assert all(p.grad is None and not p.requires_grad for p in deep_clip.parameters())
    grads = {name: p.grad for name, p in learner.named_parameters()}
    assert set(grads) == {
        "ctx",
        "proj.weight",
        "proj.bias",
        "compound_prompts_text.0",
        "compound_prompts_text.1",
        "compound_prompt_projections.0.weight",
        "compound_prompt_projections.0.bias",
        "compound_prompt_projections.1.weight",
        "compound_prompt_projections.1.bias",
    }
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_amp_matches_fp32_and_trains(deep_clip):
    learner = randomize_(MaPLePromptLearner(deep_clip, CLASSES, n_ctx=2, prompt_depth=3))
    model = MaPLeCLIP(deep_clip, learner)
    with torch.no_grad():
        fp32 = model(images())
    with Precision("amp", "cpu").autocast():
        amp = model(images())
        loss = F.cross_entropy(amp.float(), torch.tensor([0, 1, 2]))
    loss.backward()
    torch.testing.assert_close(amp.float(), fp32, rtol=0, atol=0.1 * fp32.abs().max().item())
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in learner.parameters())
    assert all(p.dtype == torch.float32 for p in learner.parameters())


# ---- trainer through train.py -----------------------------------------------------------------------------------
def maple_args(data_root, clip_file, out, *extra, epochs=3, flags=()):
    return [
        *flags,
        "--root",
        str(data_root),
        "--seed",
        "1",
        "--trainer",
        "MaPLe",
        "--output-dir",
        str(out),
        "--dataset-config-file",
        "configs/datasets/caltech101.yaml",
        "--config-file",
        "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
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
        str(epochs),
        "DATASET.NUM_SHOTS",
        "4",
        "DATALOADER.TEST.BATCH_SIZE",
        "2",
        *extra,
    ]


def test_trains_on_base_saves_only_prompts_and_evaluates_new_classes(
    dataset_writer, deep_clip_file, tmp_path, monkeypatch
):
    info = dataset_writer("Caltech101")
    out = tmp_path / "base"
    assert run_train(maple_args(dataset_writer.root, deep_clip_file, out, "DATASET.SUBSAMPLE_CLASSES", "base")) == 0
    base = json.loads((out / "results.json").read_text())
    n_base = math.ceil(info.num_classes / 2)
    assert (base["trainer"], base["subsample"], base["num_classes"]) == ("MaPLe", "base", n_base)
    assert base["metrics"]["accuracy"] > 100 / n_base + 20  # learned well above chance

    ckpt_file = out / "prompt_learner" / "model.pth.tar-3"
    state = load_checkpoint(str(ckpt_file))["state_dict"]
    assert set(state) == {
        "ctx",
        "proj.weight",
        "proj.bias",
        "compound_prompts_text.0",
        "compound_prompts_text.1",
        "compound_prompt_projections.0.weight",
        "compound_prompt_projections.0.bias",
        "compound_prompt_projections.1.weight",
        "compound_prompt_projections.1.bias",
    }
    assert ckpt_file.stat().st_size < deep_clip_file.stat().st_size / 20  # prompts (+ optimizer state) only

    # Evaluating the checkpoint on the new classes encodes the learned prompts once, not once per test batch.
    calls = record_method(monkeypatch, DeepPromptTextEncoder, "forward")
    new_out = tmp_path / "new"
    flags = ["--eval-only", "--model-dir", str(out), "--load-epoch", "3"]
    assert (
        run_train(
            maple_args(dataset_writer.root, deep_clip_file, new_out, "DATASET.SUBSAMPLE_CLASSES", "new", flags=flags)
        )
        == 0
    )
    new = json.loads((new_out / "results.json").read_text())
    assert (new["subsample"], new["num_classes"]) == ("new", info.num_classes - n_base)
    assert new["num_samples"] > 2 and len(calls) == 1
    assert "Load " in (new_out / "log.txt").read_text()


def test_amp_run_through_train_py(dataset_writer, deep_clip_file, tmp_path):
    dataset_writer("Caltech101")
    out = tmp_path / "amp"
    assert (
        run_train(
            maple_args(
                dataset_writer.root,
                deep_clip_file,
                out,
                "TRAINER.MAPLE.PREC",
                "amp",
                "DATASET.SUBSAMPLE_CLASSES",
                "base",
                epochs=1,
            )
        )
        == 0
    )
    result = json.loads((out / "results.json").read_text())
    assert result["config"].count("PREC: amp") == 1 and math.isfinite(result["metrics"]["accuracy"])
