import itertools
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from anchoropt.config import build_config
from anchoropt.errors import ConfigError
from anchoropt.method.position_plot import HeatmapLayout, render_position_matrix
from anchoropt.method.positions import (
    PositionMatrix,
    anchor_slots,
    apply_positions,
    order_text,
    sinkhorn_log,
    slot_sources,
    source_slots,
)
from anchoropt.models.stage2_base import AnchorOPTPromptLearner
from tests.support.clip_fixtures import tiny_clip  # noqa: F401
from trainers.anchoropt_stage2 import AnchorOPTStageII, StageIISettings


def _stack(num_ctx: int, anchor_len: int, width: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    soft = torch.randn(num_ctx, width)
    anchor = torch.randn(anchor_len, width)
    return soft, anchor, torch.cat([soft, anchor])


def _from_rows(rows: list[int], slots: int) -> torch.Tensor:
    matrix = torch.zeros(slots, slots)
    for slot, source in enumerate(rows):
        matrix[slot, source] = 1
    return matrix


def _is_one_hot_rows(matrix: torch.Tensor) -> bool:
    values_binary = bool(((matrix == 0) | (matrix == 1)).all())
    return values_binary and bool((matrix.sum(dim=-1) == 1).all())


def _is_permutation(matrix: torch.Tensor) -> bool:
    return _is_one_hot_rows(matrix) and bool((matrix.sum(dim=0) == 1).all())


# ---------------------------------------------------------------- learned mode


def test_learned_training_sample_is_one_hot_per_row_and_fresh_each_call():
    torch.manual_seed(0)
    positions = PositionMatrix(4, 1).train()
    with torch.no_grad():
        positions.logits.zero_()  # uniform: consecutive samples should differ
    samples = [positions() for _ in range(20)]
    assert all(_is_one_hot_rows(sample.detach()) for sample in samples)
    assert any(not torch.equal(samples[0], sample) for sample in samples[1:])


def test_learned_sample_gradient_reaches_logits():
    torch.manual_seed(1)
    positions = PositionMatrix(3, 2, tau=0.5).train()
    _, _, tokens = _stack(3, 2)
    weights = torch.randn(5, tokens.shape[1])
    (positions.arrange(tokens) * weights).sum().backward()
    assert positions.logits.grad is not None
    assert positions.logits.grad.abs().sum() > 0


def test_learned_eval_is_row_argmax_and_deterministic():
    torch.manual_seed(2)
    positions = PositionMatrix(4, 2).eval()
    expected = torch.zeros(6, 6)
    for row in range(6):
        values = positions.logits[row].tolist()
        expected[row, values.index(max(values))] = 1
    first = positions()
    assert torch.equal(first, expected)
    assert all(torch.equal(first, positions()) for _ in range(5))


def test_legacy_eval_samples_randomly_but_default_eval_does_not():
    torch.manual_seed(3)
    legacy = PositionMatrix(4, 1, legacy=True).eval()
    with torch.no_grad():
        legacy.logits.zero_()
    samples = [legacy() for _ in range(20)]
    assert all(_is_one_hot_rows(sample) for sample in samples)
    assert any(not torch.equal(samples[0], sample) for sample in samples[1:])

    correct = PositionMatrix(4, 1).eval()
    correct.load_state_dict(legacy.state_dict())
    assert all(torch.equal(correct(), correct()) for _ in range(5))


# ---------------------------------------------------------------- sinkhorn mode


def _best_assignment_value(scores: torch.Tensor) -> float:
    size = scores.shape[0]
    return max(
        sum(float(scores[row, col]) for row, col in enumerate(perm)) for perm in itertools.permutations(range(size))
    )


def test_sinkhorn_eval_is_the_optimal_permutation_for_many_random_logits():
    generator = torch.Generator().manual_seed(4)
    for trial in range(40):
        num_ctx, anchor_len = 1 + trial % 5, 1 + trial % 2
        positions = PositionMatrix(num_ctx, anchor_len, mode="sinkhorn").eval()
        with torch.no_grad():
            positions.logits.copy_(torch.randn(positions.logits.shape, generator=generator))
        matrix = positions()
        assert _is_permutation(matrix)
        chosen = float((matrix * positions.logits.detach()).sum())
        assert chosen == pytest.approx(_best_assignment_value(positions.logits.detach()), abs=1e-5)


def test_sinkhorn_training_forward_is_a_permutation_with_gradient():
    torch.manual_seed(5)
    positions = PositionMatrix(4, 1, mode="sinkhorn", tau=0.7, sinkhorn_iters=30).train()
    _, _, tokens = _stack(4, 1)
    matrix = positions()
    assert _is_permutation(matrix.detach().round())
    assert torch.allclose(matrix.detach(), matrix.detach().round(), atol=1e-5)
    (apply_positions(matrix, tokens) * torch.randn_like(tokens)).sum().backward()
    assert positions.logits.grad.abs().sum() > 0


def test_sinkhorn_normalisation_is_doubly_stochastic():
    log_alpha = torch.randn(6, 6, generator=torch.Generator().manual_seed(6)) * 3
    soft = sinkhorn_log(log_alpha, 200).exp()
    assert torch.allclose(soft.sum(dim=0), torch.ones(6), atol=1e-4)
    assert torch.allclose(soft.sum(dim=1), torch.ones(6), atol=1e-4)


# ---------------------------------------------------------------- fixed orders


@pytest.mark.parametrize("mode", ["identity", "anchor_end"])
def test_identity_and_anchor_end_give_soft_tokens_then_anchor(mode):
    soft, anchor, tokens = _stack(4, 2)
    positions = PositionMatrix(4, 2, mode=mode)
    assert torch.equal(positions.arrange(tokens), torch.cat([soft, anchor]))


def test_anchor_front_puts_anchor_first():
    soft, anchor, tokens = _stack(3, 1)
    assert torch.equal(PositionMatrix(3, 1, mode="anchor_front").arrange(tokens), torch.cat([anchor, soft]))


@pytest.mark.parametrize(
    "num_ctx, anchor_len, expected",
    [
        (4, 1, "V1 V2 A1 V3 V4"),
        (5, 1, "V1 V2 V3 A1 V4 V5"),
        (5, 2, "V1 V2 V3 A1 A2 V4 V5"),
        (1, 1, "V1 A1"),
        (2, 1, "V1 A1 V2"),
    ],
)
def test_anchor_middle_follows_ceil_half_rule(num_ctx, anchor_len, expected):
    soft, anchor, tokens = _stack(num_ctx, anchor_len)
    positions = PositionMatrix(num_ctx, anchor_len, mode="anchor_middle")
    assert order_text(positions(), num_ctx, anchor_len) == expected
    by_label = {f"V{i + 1}": soft[i] for i in range(num_ctx)} | {f"A{j + 1}": anchor[j] for j in range(anchor_len)}
    assert torch.equal(positions.arrange(tokens), torch.stack([by_label[label] for label in expected.split()]))


def test_fixed_orders_have_no_parameters_and_ignore_legacy():
    positions = PositionMatrix(4, 1, mode="anchor_front", legacy=True).eval()
    assert list(positions.parameters()) == []
    assert positions.state_dict() == {}
    assert all(torch.equal(positions(), positions()) for _ in range(3))


def test_trainable_modes_store_logits_in_state_dict():
    assert set(PositionMatrix(4, 1).state_dict()) == {"logits"}
    assert PositionMatrix(4, 1, mode="sinkhorn").state_dict()["logits"].shape == (5, 5)


# ---------------------------------------------------------------- applying and reading P


def test_apply_positions_batched_matches_per_item():
    torch.manual_seed(7)
    matrix = PositionMatrix(3, 1).eval()()
    tokens = torch.randn(2, 7, 4, 5)
    arranged = apply_positions(matrix, tokens)
    for first, second in itertools.product(range(2), range(7)):
        assert torch.allclose(arranged[first, second], matrix @ tokens[first, second])


def test_apply_positions_follows_token_dtype_and_rejects_wrong_slots():
    matrix = PositionMatrix(2, 1, mode="anchor_front")()
    tokens = torch.randn(3, 4, dtype=torch.float64)
    assert apply_positions(matrix, tokens).dtype == torch.float64
    with pytest.raises(ValueError, match="3"):
        apply_positions(matrix, torch.randn(4, 4))


def test_readers_report_repeats_and_missing_sources_honestly():
    # slots: V1, A1, V1, V3  (V2 vanished, V1 repeated)
    matrix = _from_rows([0, 3, 0, 2], 4)
    assert slot_sources(matrix) == [0, 3, 0, 2]
    assert source_slots(matrix) == [[0, 2], [], [3], [1]]
    assert anchor_slots(matrix, 3, 1) == [1]
    assert order_text(matrix, 3, 1) == "V1 A1 V1 V3 (missing: V2)"


def test_anchor_slots_none_when_no_slot_takes_the_anchor_and_first_slot_when_repeated():
    assert anchor_slots(_from_rows([0, 1, 2, 0], 4), 3, 1) == [None]
    assert anchor_slots(_from_rows([4, 0, 3, 3, 1], 5), 3, 2) == [2, 0]


# ---------------------------------------------------------------- configuration errors


def test_unknown_mode_and_bad_temperature_are_config_errors():
    with pytest.raises(ConfigError, match="POSITION_MODE.*diagonal"):
        PositionMatrix(4, 1, mode="diagonal")
    with pytest.raises(ConfigError, match="GUMBEL_TEMP"):
        PositionMatrix(4, 1, tau=0.0)
    with pytest.raises(ConfigError, match="SINKHORN_ITERS"):
        PositionMatrix(4, 1, mode="sinkhorn", sinkhorn_iters=0)


# ---------------------------------------------------------------- plot


def test_position_plot_png_has_expected_size_and_shades_cells_by_value(tmp_path):
    matrix = torch.full((5, 5), 0.05)
    matrix[0, 4] = 0.9
    path = render_position_matrix(matrix, tmp_path / "plots" / "positions.png", 4, 1)
    small = render_position_matrix(torch.eye(3), tmp_path / "small.png", 2, 1)
    image = Image.open(path).convert("RGB")
    assert Image.open(path).format == "PNG"
    assert image.size == HeatmapLayout(5).size
    width_small, height_small = Image.open(small).size
    assert image.size[1] - height_small == 2 * HeatmapLayout(5).cell

    def sample(slot, source):
        x0, y0, _, _ = HeatmapLayout(5).cell_box(slot, source)
        return image.getpixel((x0 + 4, y0 + 4))

    high, low = sample(0, 4), sample(0, 0)
    assert sum(high) < sum(low) - 200  # the high-value cell is much darker
    assert sample(1, 1) == low  # equal values, equal colours


# ---- GUMBEL_TEMP and the straight-through gradient --------------------------------------------------------------
def test_gumbel_temperature_shapes_the_sample_and_the_straight_through_gradient_is_the_soft_samples():
    """P = one-hot(argmax(Θ + g)) in value; dL/dΘ equals that of softmax((Θ + g)/τ), so τ changes the gradient."""
    theta = torch.randn(5, 5, generator=torch.Generator().manual_seed(3))
    weights = torch.randn(5, 5, generator=torch.Generator().manual_seed(4))
    grads = {}
    for tau in (0.3, 2.0):
        positions = PositionMatrix(4, 1, "learned", tau=tau).train()
        with torch.no_grad():
            positions.logits.copy_(theta)
        torch.manual_seed(11)  # torch's gumbel_softmax draws its noise as -log(Exp(1)) from the global stream
        noise = -torch.empty(5, 5).exponential_().log()
        torch.manual_seed(11)
        matrix = positions()
        assert torch.equal(matrix.detach(), F.one_hot((theta + noise).argmax(-1), 5).float())  # hard: τ-independent
        (matrix * weights).sum().backward()
        soft_theta = theta.clone().requires_grad_(True)
        (((soft_theta + noise) / tau).softmax(-1) * weights).sum().backward()
        torch.testing.assert_close(positions.logits.grad, soft_theta.grad, rtol=1e-5, atol=1e-7)
        grads[tau] = positions.logits.grad
    assert not torch.allclose(grads[0.3], grads[2.0], rtol=0.05)


def test_gumbel_temp_setting_reaches_the_position_matrix(tiny_clip):  # noqa: F811
    settings = StageIISettings.from_cfg(build_config(opts=["TRAINER.ANCHOROPT.GUMBEL_TEMP", "0.25"]))
    options = AnchorOPTStageII.learner_options(SimpleNamespace(stage2=settings, cfg=build_config()))
    learner = AnchorOPTPromptLearner(tiny_clip, ["dog", "cat"], **options)
    assert learner.positions.tau == 0.25
