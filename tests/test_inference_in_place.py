"""The in-place MLP activation and residual adds (used when no gradient flows) change no value and no input."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from anchoropt.backbone.text_encoder import causal_attention_mask, mlp_forward, residual_block_forward
from anchoropt.models.clip_parts import ImageEncoder
from tests.support.clip_fixtures import tiny_clip  # noqa: F401  (pytest fixture)


def images(n: int = 3, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_image_features_equal_clip_with_and_without_grad_mode(tiny_clip):
    expected = F.normalize(tiny_clip.encode_image(images()).float(), dim=-1).detach()
    encoder = ImageEncoder(tiny_clip)
    with torch.no_grad():
        torch.testing.assert_close(encoder(images()), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(encoder(images()), expected, rtol=0, atol=1e-6)  # grad mode, frozen weights


def test_gradient_through_the_image_tower_is_unchanged(tiny_clip):
    weights = torch.randn(3, tiny_clip.visual.output_dim, generator=torch.Generator().manual_seed(1))
    ours_in = images().requires_grad_(True)
    (ImageEncoder(tiny_clip)(ours_in) * weights).sum().backward()
    ref_in = images().requires_grad_(True)
    (F.normalize(tiny_clip.visual(ref_in).float(), dim=-1) * weights).sum().backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=0, atol=1e-6 * float(ref_in.grad.abs().max()))


def test_block_leaves_its_input_alone_and_matches_clip(tiny_clip):
    block = tiny_clip.transformer.resblocks[0]
    x = torch.randn(77, 2, tiny_clip.ln_final.weight.shape[0], generator=torch.Generator().manual_seed(2))
    before = x.clone()
    with torch.no_grad():
        ours = residual_block_forward(block, x, causal_attention_mask(77, x.device), is_causal=True)
        mlp_ours = mlp_forward(block.mlp, x)
        reference = block(x)
        mlp_reference = block.mlp(x)
    assert torch.equal(x, before)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(mlp_ours, mlp_reference, rtol=0, atol=1e-6)


def test_bf16_autocast_keeps_clip_dtypes(tiny_clip):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ours = ImageEncoder(tiny_clip)(images())
        expected = F.normalize(tiny_clip.visual(images()).float(), dim=-1)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)  # same dtype promotions as CLIP
