"""Session fixtures: a tiny random CLIP and copies of it saved as a state dict and a JIT archive."""

from __future__ import annotations

from pathlib import Path

import pytest
from clip.model import CLIP

from anchoropt.backbone.random_clip import build_random_clip, save_clip_jit_archive, save_clip_state_dict

TINY_SEED = 0


@pytest.fixture(scope="session")
def tiny_clip() -> CLIP:
    """A tiny fp32 CLIP shared by the session: do not modify it (deep-copy first)."""
    return build_random_clip("tiny", seed=TINY_SEED)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny_clip")


@pytest.fixture(scope="session")
def tiny_clip_state_dict_file(tiny_clip: CLIP, tiny_clip_dir: Path) -> Path:
    path = tiny_clip_dir / "tiny_clip_state_dict.pt"
    save_clip_state_dict(tiny_clip, path)
    return path


@pytest.fixture(scope="session")
def tiny_clip_jit_file(tiny_clip: CLIP, tiny_clip_dir: Path) -> Path:
    path = tiny_clip_dir / "tiny_clip_jit.pt"
    save_clip_jit_archive(tiny_clip, path)
    return path
