import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anchoropt.errors import ConfigError
from anchoropt.method.losses import anchoropt_loss, kd_loss

STUDENT = [[2.0, -1.0, 0.5, 3.0], [0.0, 1.5, -2.0, 0.3], [4.0, 4.0, -1.0, 0.0]]
TEACHER = [[1.0, 0.0, 0.5, 2.0], [-1.0, 2.5, 0.0, 0.0], [3.0, 1.0, 1.0, -2.0]]
LABELS = [3, 1, 0]


def _softmax(row, temperature):
    exps = [math.exp(value / temperature) for value in row]
    return [value / sum(exps) for value in exps]


def _hand_kd(student, teacher, temperature):
    total = 0.0
    for row_s, row_t in zip(student, teacher):
        p_s, p_t = _softmax(row_s, temperature), _softmax(row_t, temperature)
        total += sum(t * (math.log(t) - math.log(s)) for s, t in zip(p_s, p_t))
    return temperature**2 * total / (len(student) * len(student[0]))


def _hand_ce(logits, labels):
    rows = np.asarray(logits)
    log_probs = rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
    return float(-np.mean([log_probs[i, label] for i, label in enumerate(labels)]))


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0])
def test_kd_loss_matches_hand_computation(temperature):
    value = kd_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), temperature)
    assert float(value) == pytest.approx(_hand_kd(STUDENT, TEACHER, temperature), rel=1e-5)


def test_kd_loss_is_zero_for_identical_logits_and_computed_in_fp32():
    logits = torch.tensor(STUDENT, dtype=torch.float16)
    value = kd_loss(logits, logits.clone(), 2.0)
    assert value.dtype == torch.float32
    assert float(value) == pytest.approx(0.0, abs=1e-6)


def test_anchoropt_loss_matches_weighted_hand_computation():
    normal, anchor = torch.tensor(STUDENT), torch.tensor(TEACHER)
    teacher = [[(n + a) / 2 for n, a in zip(row_n, row_a)] for row_n, row_a in zip(STUDENT, TEACHER)]
    total, parts = anchoropt_loss(
        normal, anchor, torch.tensor(LABELS), ce_weight=10.0, kd_weight=100.0, kd_temperature=2.0
    )
    ce, kd = _hand_ce(STUDENT, LABELS), _hand_kd(STUDENT, teacher, 2.0)
    assert float(parts["ce"]) == pytest.approx(ce, rel=1e-5)
    assert float(parts["kd"]) == pytest.approx(kd, rel=1e-5)
    assert float(total) == pytest.approx(10.0 * ce + 100.0 * kd, rel=1e-5)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_zero_kd_weight_is_plain_cross_entropy_and_never_uses_temperature(temperature):
    normal = torch.tensor(STUDENT, requires_grad=True)
    total, parts = anchoropt_loss(
        normal, None, torch.tensor(LABELS), ce_weight=10.0, kd_weight=0.0, kd_temperature=temperature
    )
    assert float(total.detach()) == pytest.approx(10.0 * _hand_ce(STUDENT, LABELS), rel=1e-5)
    assert float(parts["kd"]) == 0.0
    total.backward()
    assert torch.isfinite(normal.grad).all()


def test_no_gradient_flows_into_the_teacher():
    normal = torch.tensor(STUDENT, requires_grad=True)
    anchor = torch.tensor(TEACHER, requires_grad=True)
    total, _ = anchoropt_loss(normal, anchor, torch.tensor(LABELS), 1.0, 5.0, 2.0)
    total.backward()
    assert anchor.grad is None

    # Same loss with the teacher built from constants: identical gradient for the student.
    reference = torch.tensor(STUDENT, requires_grad=True)
    constant_teacher = (torch.tensor(STUDENT) + torch.tensor(TEACHER)) / 2
    expected = F.cross_entropy(reference, torch.tensor(LABELS)) + 5.0 * kd_loss(reference, constant_teacher, 2.0)
    expected.backward()
    assert torch.allclose(normal.grad, reference.grad, atol=1e-6)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_positive_kd_weight_with_non_positive_temperature_is_config_error(temperature):
    with pytest.raises(ConfigError, match="TRAINER.ANCHOROPT.KD_TEMPERATURE"):
        anchoropt_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS), 1.0, 10.0, temperature)


def test_negative_weights_are_config_errors():
    with pytest.raises(ConfigError, match="KD_WEIGHT"):
        anchoropt_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS), 1.0, -1.0, 1.0)
    with pytest.raises(ConfigError, match="PROMPT_CE_WEIGHT"):
        anchoropt_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS), -1.0, 1.0, 1.0)
