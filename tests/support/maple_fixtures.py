"""A small random CLIP for deep-prompt tests (4 layers per tower, three different widths) and helpers.

Text width 64, vision width 128 and embedding width 32 differ, so a width taken from the
wrong tower fails; 4 layers leave room for a prompt depth below the layer count.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from clip.model import CLIP

from anchoropt.backbone.random_clip import save_clip_state_dict

DEEP_SPEC = dict(
    embed_dim=32,
    image_resolution=32,
    vision_layers=4,
    vision_width=128,
    vision_patch_size=16,
    context_length=77,
    vocab_size=49408,
    transformer_width=64,
    transformer_heads=1,
    transformer_layers=4,
)


def build_deep_clip(seed: int = 0) -> CLIP:
    """A frozen fp32 CLIP in eval mode, as `load_clip` returns (heads = width // 64, as clip's build_model infers)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(**DEEP_SPEC)
    model.requires_grad_(False)
    return model.float().eval()


@pytest.fixture(scope="session")
def deep_clip() -> CLIP:
    """Shared by the session: do not modify it (deep-copy first)."""
    return build_deep_clip()


@pytest.fixture(scope="session")
def deep_clip_file(deep_clip: CLIP, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("deep_clip") / "deep_clip_state_dict.pt"
    save_clip_state_dict(deep_clip, path)
    return path


def images(n: int = 3, seed: int = 0, size: int = DEEP_SPEC["image_resolution"]) -> torch.Tensor:
    """A fixed batch of random images at the test CLIP's resolution."""
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def randomize_(learner: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Move every learned tensor away from its init, so equalities cannot hold by accident."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in learner.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return learner


def block_inputs(blocks) -> tuple[dict[int, torch.Tensor], list]:
    """Record the sequence entering each block ([seq, batch, width]) via its ln_1 (the blocks are driven directly)."""
    seen, handles = {}, []
    for i, block in enumerate(blocks):
        handles.append(block.ln_1.register_forward_pre_hook(lambda m, args, i=i: seen.__setitem__(i, args[0].detach())))
    return seen, handles  # remove the handles when done
