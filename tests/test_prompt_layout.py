"""Prompt layouts: token order per template, slot filling (shared / CSC / batched), buffers, context init."""

from __future__ import annotations

import clip
import pytest
import torch
from torch import nn

from anchoropt.backbone.text_encoder import TextEncoder
from anchoropt.errors import ConfigError
from anchoropt.prompts.context import init_context
from anchoropt.prompts.layout import ANCHOR_TEMPLATE, PromptLayout, render_prompt, template_for_position
from tests.support.clip_fixtures import tiny_clip  # noqa: F401  (pytest fixture)

# Includes an underscore name, digits/punctuation, and a name ending in "." (its "." merges with
# the template's "." into one BPE token when the sentence is tokenized as a whole, as CoOp does).
CLASSES = ["cat", "golden_retriever", "a340-300", "St. Bernard."]
X_TOKEN = clip.tokenize("X")[0, 1].item()

# The sentence CoOp tokenizes for each class-token position, with "X" for each context token
# (K = 5, so "middle" puts 5 // 2 = 2 tokens before the class and 3 after, then ".").
REFERENCE_SENTENCES = {
    "end": "X X X X X {}.",
    "middle": "X X {} X X X.",
    "front": "{} X X X X X.",
}


def reference_tokens(sentence: str) -> torch.Tensor:
    tokens = clip.tokenize(sentence)[0].long()
    return tokens[: int(tokens.argmax()) + 1]


def check_against_reference(layout: PromptLayout, sentences: list[str]) -> None:
    for row, sentence in enumerate(sentences):
        expected = reference_tokens(sentence)
        n = len(expected)
        assert layout.eot_index[row].item() == n - 1
        slots = layout.slot_index[row, :n]
        fixed = slots < 0
        # Fixed tokens are exactly the sentence's tokens, token by token ...
        assert torch.equal(layout.token_ids[row, :n][fixed], expected[fixed]), sentence
        # ... and the slots sit where the sentence has its "X" tokens, numbered left to right.
        assert torch.equal(expected[~fixed], torch.full_like(expected[~fixed], X_TOKEN)), sentence
        assert slots[~fixed].tolist() == list(range(layout.n_ctx)), sentence
        assert (layout.slot_index[row, n:] == -1).all()
    assert layout.length == max(len(reference_tokens(s)) for s in sentences)


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_coop_token_order(tiny_clip, position):
    layout = PromptLayout(tiny_clip.token_embedding, CLASSES, template_for_position(position), n_ctx=5)
    sentences = [REFERENCE_SENTENCES[position].format(name.replace("_", " ")) for name in CLASSES]
    check_against_reference(layout, sentences)
    assert layout.prompts == sentences


def test_anchor_template_token_order(tiny_clip):
    layout = PromptLayout(tiny_clip.token_embedding, CLASSES, ANCHOR_TEMPLATE, n_ctx=2)
    check_against_reference(layout, [f"X X of {name.replace('_', ' ')}." for name in CLASSES])


def test_numbered_slot_groups(tiny_clip):
    layout = PromptLayout(tiny_clip.token_embedding, ["cat"], "a {ctx:2} photo of {ctx:1} {class}.", n_ctx=3)
    check_against_reference(layout, ["a X X photo of X cat."])


def test_fixed_embeddings_are_token_embeddings(tiny_clip):
    layout = PromptLayout(tiny_clip.token_embedding, CLASSES, template_for_position("end"), n_ctx=4)
    assert layout.fixed_embeds.shape == (len(CLASSES), layout.length, tiny_clip.ln_final.weight.shape[0])
    with torch.no_grad():
        assert torch.equal(layout.fixed_embeds, tiny_clip.token_embedding(layout.token_ids))
    assert not layout.fixed_embeds.requires_grad


def distinct_ctx(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def expected_prompt(layout: PromptLayout, cls: int, ctx_k_d: torch.Tensor) -> torch.Tensor:
    out = layout.fixed_embeds[cls].clone()
    for pos, slot in enumerate(layout.slot_index[cls].tolist()):
        if slot >= 0:
            out[pos] = ctx_k_d[slot]
    return out


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_assemble_shared(tiny_clip, position):
    layout = PromptLayout(tiny_clip.token_embedding, CLASSES, template_for_position(position), n_ctx=5)
    ctx = distinct_ctx(5, layout.fixed_embeds.shape[-1])
    prompts = layout.assemble(ctx)
    assert prompts.shape == layout.fixed_embeds.shape
    for c in range(len(CLASSES)):
        assert torch.equal(prompts[c], expected_prompt(layout, c, ctx))


def test_assemble_class_specific(tiny_clip):
    layout = PromptLayout(tiny_clip.token_embedding, CLASSES, template_for_position("middle"), n_ctx=4)
    ctx = distinct_ctx(len(CLASSES), 4, layout.fixed_embeds.shape[-1])
    prompts = layout.assemble(ctx, class_specific=True)
    for c in range(len(CLASSES)):
        assert torch.equal(prompts[c], expected_prompt(layout, c, ctx[c]))


def test_assemble_batched(tiny_clip):
    layout = PromptLayout(tiny_clip.token_embedding, CLASSES, template_for_position("end"), n_ctx=4)
    width = layout.fixed_embeds.shape[-1]
    ctx = distinct_ctx(3, 4, width)  # e.g. CoCoOp: one context per image
    prompts = layout.assemble(ctx)
    assert prompts.shape == (3, len(CLASSES), layout.length, width)
    for b in range(3):
        assert torch.equal(prompts[b], layout.assemble(ctx[b]))

    csc = distinct_ctx(3, len(CLASSES), 4, width)
    batched_csc = layout.assemble(csc, class_specific=True)
    for b in range(3):
        assert torch.equal(batched_csc[b], layout.assemble(csc[b], class_specific=True))


def test_assemble_gradient_reaches_each_slot_once_per_class(tiny_clip):
    layout = PromptLayout(tiny_clip.token_embedding, CLASSES, template_for_position("front"), n_ctx=3)
    ctx = torch.zeros(3, layout.fixed_embeds.shape[-1], requires_grad=True)
    layout.assemble(ctx).sum().backward()
    assert torch.equal(ctx.grad, torch.full_like(ctx, float(len(CLASSES))))


def test_assemble_rejects_wrong_shapes(tiny_clip):
    layout = PromptLayout(tiny_clip.token_embedding, CLASSES, template_for_position("end"), n_ctx=4)
    width = layout.fixed_embeds.shape[-1]
    with pytest.raises(ValueError, match="expected"):
        layout.assemble(torch.zeros(3, width))
    with pytest.raises(ValueError, match="class-specific"):
        layout.assemble(torch.zeros(len(CLASSES) + 1, 4, width), class_specific=True)


def test_truncated_prompts_encode_like_full_length(tiny_clip):
    layout = PromptLayout(tiny_clip.token_embedding, CLASSES, template_for_position("middle"), n_ctx=4)
    assert layout.length == int(layout.eot_index.max()) + 1 < tiny_clip.context_length
    ctx = init_context(tiny_clip.token_embedding, 4, generator=torch.Generator().manual_seed(0)).vectors
    with torch.no_grad():
        ours = TextEncoder(tiny_clip)(layout.assemble(ctx), layout.eot_index, length=layout.length)
        # Reference: the same prompts padded to 77 positions, through CLIP's own full computation.
        full = torch.zeros(len(CLASSES), tiny_clip.context_length, dtype=torch.long)
        full[:, : layout.length] = layout.token_ids
        padded = tiny_clip.token_embedding(full)
        padded[:, : layout.length] = layout.assemble(ctx)
        x = padded + tiny_clip.positional_embedding
        x = tiny_clip.ln_final(tiny_clip.transformer(x.permute(1, 0, 2)).permute(1, 0, 2))
        reference = x[torch.arange(len(CLASSES)), layout.eot_index] @ tiny_clip.text_projection
    assert torch.allclose(ours, reference, atol=1e-5, rtol=0)


class Learner(nn.Module):
    def __init__(self, clip_model, class_names):
        super().__init__()
        self.layout = PromptLayout(clip_model.token_embedding, class_names, template_for_position("end"), 4)
        self.ctx = nn.Parameter(torch.zeros(4, clip_model.ln_final.weight.shape[0]))


def test_checkpoints_hold_no_class_dependent_tensors(tiny_clip):
    base = Learner(tiny_clip, CLASSES[:2])
    assert list(base.state_dict()) == ["ctx"]
    assert "token_embedding" not in dict(base.named_modules()).keys()
    with torch.no_grad():
        base.ctx.fill_(1.0)
    novel = Learner(tiny_clip, CLASSES[2:] + ["dog"])  # a different class list loads the same state
    novel.load_state_dict(base.state_dict())
    assert torch.equal(novel.ctx, base.ctx)


def test_rebuild_for_new_class_names(tiny_clip):
    layout = PromptLayout(tiny_clip.token_embedding, CLASSES[:2], template_for_position("end"), n_ctx=4)
    layout.set_class_names(["dog", "tabby_cat", "bird"])
    assert layout.n_cls == 3 and layout.fixed_embeds.shape[0] == 3
    check_against_reference(layout, ["X X X X dog.", "X X X X tabby cat.", "X X X X bird."])
    assert layout.length == len(reference_tokens("X X X X tabby cat."))


def test_layout_errors(tiny_clip):
    emb = tiny_clip.token_embedding
    with pytest.raises(ConfigError, match="CLASS_TOKEN_POSITION='top'"):
        template_for_position("top")
    with pytest.raises(ConfigError, match="3 context slots, expected 4"):
        PromptLayout(emb, ["cat"], "{ctx:3} {class}.", n_ctx=4)
    with pytest.raises(ConfigError, match="no {class} placeholder"):
        PromptLayout(emb, ["cat"], "{ctx} of a thing.", n_ctx=4)
    with pytest.raises(ConfigError, match="'very long") as info:
        PromptLayout(emb, ["cat", "very long " * 40], template_for_position("end"), n_ctx=4)
    assert "'cat'" not in str(info.value)


def test_render_prompt():
    assert render_prompt(ANCHOR_TEMPLATE, "golden_retriever", 1) == "X of golden retriever."
    assert render_prompt(template_for_position("middle"), "cat", 3, slot_word="*") == "* cat * *."


# --- context initialisation ---------------------------------------------------------------------


def test_context_from_words(tiny_clip):
    init = init_context(tiny_clip.token_embedding, n_ctx=16, ctx_init="a_photo of a")
    expected_ids = clip.tokenize("a photo of a")[0, 1:5].long()
    assert init.n_ctx == 4 and init.prefix == "a photo of a"
    with torch.no_grad():
        assert torch.equal(init.vectors, tiny_clip.token_embedding(expected_ids))
    assert init.vectors.dtype == torch.float32 and not init.vectors.requires_grad


def test_context_from_words_class_specific(tiny_clip):
    init = init_context(tiny_clip.token_embedding, 0, ctx_init="a photo of a", n_cls=3)
    assert init.vectors.shape == (3, 4, tiny_clip.ln_final.weight.shape[0])
    assert torch.equal(init.vectors[0], init.vectors[2])
    init.vectors[0, 0, 0] += 1  # classes must not share storage (each learns its own context)
    assert not torch.equal(init.vectors[0], init.vectors[2])


def test_random_context(tiny_clip):
    width = tiny_clip.ln_final.weight.shape[0]
    a = init_context(tiny_clip.token_embedding, 16, generator=torch.Generator().manual_seed(1))
    b = init_context(tiny_clip.token_embedding, 16, generator=torch.Generator().manual_seed(1))
    assert a.vectors.shape == (16, width) and a.prefix == " ".join(["X"] * 16)
    assert torch.equal(a.vectors, b.vectors)
    assert abs(a.vectors.std().item() - 0.02) < 0.002 and abs(a.vectors.mean().item()) < 0.002
    csc = init_context(tiny_clip.token_embedding, 2, n_cls=5)
    assert csc.vectors.shape == (5, 2, width)
    with pytest.raises(ConfigError, match="N_CTX"):
        init_context(tiny_clip.token_embedding, 0)
