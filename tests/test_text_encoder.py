"""The truncated text encoder equals CLIP's full 77-position computation."""

from __future__ import annotations

import clip
import pytest
import torch

from anchoropt.backbone.text_encoder import TextEncoder, causal_attention_mask, residual_block_forward
from tests.support.clip_fixtures import tiny_clip  # noqa: F401  (pytest fixture)

SENTENCES = [
    "a photo of a cat.",
    "dog",
    "a photo of a big brown dog sitting on a red sofa in a sunny living room, a type of pet.",
    "",
]


def full_length_reference(clip_model, embeds: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
    """CLIP's own computation over all context positions (its transformer and causal mask)."""
    x = embeds + clip_model.positional_embedding
    x = clip_model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    x = clip_model.ln_final(x)
    return x[torch.arange(x.shape[0]), eot_index] @ clip_model.text_projection


class LengthRecorder(TextEncoder):
    """Records how many positions the transformer ran on."""

    def __init__(self, clip_model):
        super().__init__(clip_model)
        self.lengths: list[int] = []

    def run_layers(self, x, attn_mask):
        self.lengths.append(x.shape[0])
        return super().run_layers(x, attn_mask)


def test_encode_token_ids_equals_clip_encode_text(tiny_clip):
    tokens = clip.tokenize(SENTENCES)
    encoder = LengthRecorder(tiny_clip)
    with torch.no_grad():
        ours = encoder.encode_token_ids(tokens)
        reference = tiny_clip.encode_text(tokens)
    assert torch.allclose(ours, reference, atol=1e-5, rtol=0)
    longest = int((tokens != 0).sum(dim=1).max())
    assert encoder.lengths == [longest] and longest < tiny_clip.context_length


def test_encode_texts_batches_and_matches(tiny_clip):
    encoder = TextEncoder(tiny_clip)
    with torch.no_grad():
        ours = encoder.encode_texts(SENTENCES, batch_size=3)
        reference = tiny_clip.encode_text(clip.tokenize(SENTENCES))
    assert torch.allclose(ours, reference, atol=1e-5, rtol=0)


def test_encode_texts_truncates_long_text(tiny_clip):
    long_text = " ".join(["word"] * 100)
    with torch.no_grad():
        ours = TextEncoder(tiny_clip).encode_texts([long_text])
        reference = tiny_clip.encode_text(clip.tokenize([long_text], truncate=True))
    assert torch.allclose(ours, reference, atol=1e-5, rtol=0)


def random_prompts(clip_model, eots):
    g = torch.Generator().manual_seed(0)
    width = clip_model.ln_final.weight.shape[0]
    embeds = 0.02 * torch.randn(len(eots), clip_model.context_length, width, generator=g)
    return embeds, torch.tensor(eots)


@pytest.mark.parametrize("given_length", [None, "exact", "longer"])
def test_prompt_embeddings_equal_full_length(tiny_clip, given_length):
    eots = [5, 12, 30, 9]
    embeds, eot_index = random_prompts(tiny_clip, eots)
    encoder = LengthRecorder(tiny_clip)
    reference = full_length_reference(tiny_clip, embeds, eot_index)
    if given_length is None:
        ours = encoder(embeds, eot_index)  # all 77 positions given, truncated inside
    elif given_length == "exact":
        ours = encoder(embeds[:, :31], eot_index, length=31)  # already truncated (as a layout gives)
    else:
        ours = encoder(embeds[:, :40], eot_index, length=40)
    assert torch.allclose(ours, reference, atol=1e-5, rtol=0)
    assert encoder.lengths == [{None: 31, "exact": 31, "longer": 40}[given_length]]


def test_gradients_equal_full_length(tiny_clip):
    embeds, eot_index = random_prompts(tiny_clip, [3, 17, 8])
    weights = torch.randn(3, tiny_clip.text_projection.shape[1], generator=torch.Generator().manual_seed(1))

    ours_in = embeds.clone().requires_grad_(True)
    (TextEncoder(tiny_clip)(ours_in, eot_index) * weights).sum().backward()
    ref_in = embeds.clone().requires_grad_(True)
    (full_length_reference(tiny_clip, ref_in, eot_index) * weights).sum().backward()

    scale = ref_in.grad.abs().max()
    assert torch.allclose(ours_in.grad, ref_in.grad, atol=1e-5 * scale, rtol=0)
    assert ref_in.grad[0, 4:].abs().max() == 0  # causal: nothing after EOT matters


def test_residual_block_forward_matches_clip_block_and_leaves_it_alone(tiny_clip):
    block = tiny_clip.transformer.resblocks[0]
    mask_before = block.attn_mask
    x = torch.randn(77, 2, tiny_clip.ln_final.weight.shape[0], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = block(x)
        ours = residual_block_forward(block, x, causal_attention_mask(77, x.device), is_causal=True)
        plain = residual_block_forward(block, x, causal_attention_mask(77, x.device))
    assert torch.allclose(ours, reference, atol=1e-5, rtol=0)
    assert torch.allclose(plain, reference, atol=1e-5, rtol=0)
    assert block.attn_mask is mask_before


def test_causal_mask_is_cached_and_causal():
    mask = causal_attention_mask(4, torch.device("cpu"))
    assert mask is causal_attention_mask(4, torch.device("cpu"))
    expected = torch.tensor([[j > i for j in range(4)] for i in range(4)])
    assert torch.equal(mask, expected)


def test_text_encoder_shares_clip_parameters(tiny_clip):
    encoder = TextEncoder(tiny_clip)
    assert encoder.text_projection is tiny_clip.text_projection
    assert encoder.resblocks is tiny_clip.transformer.resblocks


def test_eot_beyond_given_positions_is_an_error(tiny_clip):
    embeds, _ = random_prompts(tiny_clip, [3])
    with pytest.raises(ValueError, match="eot_index"):
        TextEncoder(tiny_clip)(embeds[:, :5], torch.tensor([7]))
