"""Prompts of different lengths are encoded in length groups: exact, and fewer positions run."""

from __future__ import annotations

import random

import pytest
import torch

from anchoropt.backbone.text_encoder import TextEncoder, length_groups
from anchoropt.models.maple_anchoropt import MaPLeAnchorOPTCLIP, MaPLeAnchorOPTPromptLearner
from tests.support.clip_fixtures import tiny_clip  # noqa: F401  (pytest fixture)
from tests.support.maple_fixtures import deep_clip, randomize_  # noqa: F401  (pytest fixture)


class LengthRecorder(TextEncoder):
    """Records how many rows and positions each transformer run had."""

    def __init__(self, clip_model):
        super().__init__(clip_model)
        self.runs: list[tuple[int, int]] = []

    def run_layers(self, x, attn_mask):
        self.runs.append((x.shape[1], x.shape[0]))
        return super().run_layers(x, attn_mask)


def skewed_eots(count: int, seed: int = 0) -> list[int]:
    """Mostly short prompts and a few long ones, as class names are."""
    rng = random.Random(seed)
    return [rng.choice([6, 7, 7, 8, 8, 9, 10, 12, 20, 30]) for _ in range(count)]


def test_groups_partition_the_rows_and_run_fewer_positions():
    eots = skewed_eots(300)
    groups = length_groups(eots, max_groups=4, min_rows=32)
    rows = sorted(r for group, _ in groups for r in group)
    assert rows == list(range(300))
    assert 2 <= len(groups) <= 4
    for group, length in groups:
        assert len(group) >= 32 and length == max(eots[r] for r in group) + 1
    assert [length for _, length in groups] == sorted(length for _, length in groups)
    assert sum(len(g) * length for g, length in groups) < 0.7 * 300 * (max(eots) + 1)


@pytest.mark.parametrize("eots", [[5, 12, 30, 9], [7] * 100, []])
def test_few_rows_or_one_length_make_one_group(eots):
    groups = length_groups(eots, min_rows=32)
    assert len(groups) == (1 if eots else 0)
    if eots:
        assert sorted(groups[0][0]) == list(range(len(eots))) and groups[0][1] == max(eots) + 1


def test_grouped_features_and_gradients_equal_one_run(tiny_clip):
    eots = torch.tensor(skewed_eots(120, seed=1))
    width = tiny_clip.ln_final.weight.shape[0]
    embeds = 0.02 * torch.randn(120, 31, width, generator=torch.Generator().manual_seed(0))
    weights = torch.randn(120, tiny_clip.text_projection.shape[1], generator=torch.Generator().manual_seed(1))

    encoder = LengthRecorder(tiny_clip)
    grouped_in = embeds.clone().requires_grad_(True)
    grouped = encoder(grouped_in, eots, 31)
    (grouped * weights).sum().backward()
    single_in = embeds.clone().requires_grad_(True)
    single = encoder.encode_group(single_in, eots, 31)  # every row over all 31 positions
    (single * weights).sum().backward()

    assert torch.allclose(grouped, single, atol=1e-5, rtol=0)
    assert torch.allclose(grouped_in.grad, single_in.grad, atol=1e-5 * single_in.grad.abs().max(), rtol=0)
    grouped_runs = encoder.runs[:-1]
    assert len(grouped_runs) >= 2 and sum(rows for rows, _ in grouped_runs) == 120
    assert max(positions for _, positions in grouped_runs) == 31
    assert sum(rows * positions for rows, positions in grouped_runs) < 120 * 31


def test_a_longer_length_than_needed_is_run_for_every_row(tiny_clip):
    eots = torch.tensor(skewed_eots(64, seed=2))
    embeds = torch.zeros(64, 40, tiny_clip.ln_final.weight.shape[0])
    encoder = LengthRecorder(tiny_clip)
    encoder(embeds, eots, 40)
    assert encoder.runs == [(64, 40)]


def test_deep_prompted_text_is_exact_in_groups(deep_clip):
    # Class names of very different lengths, enough of them to form groups; slots carry the anchor state.
    names = [("x" * (1 + i % 3) + " ") * (1 + (i * 7) % 9) for i in range(80)]
    learner = MaPLeAnchorOPTPromptLearner(deep_clip, names, n_ctx=2, anchor_len=1, prompt_depth=3)
    randomize_(learner)
    model = MaPLeAnchorOPTCLIP(deep_clip, learner).eval()
    with torch.no_grad():
        prompts = learner.text_prompts()
        grouped = model.text_encoder(prompts.embeds, prompts.eot_index, prompts.length, prompts.deep)
        one_by_one = torch.cat(
            [
                model.text_encoder(prompts.embeds[i : i + 1], prompts.eot_index[i : i + 1], None, prompts.deep)
                for i in range(len(names))
            ]
        )
    assert len(length_groups(prompts.eot_index.tolist())) >= 2
    assert torch.allclose(grouped, one_by_one, atol=1e-5, rtol=0)
