"""Every training loss of the toolkit, in one place.

- Stage I: `description_mse` (anchor prompt vs. LLM description features).
- Stage II: `anchoropt_loss` = cross-entropy on the normal branch plus distillation (`kd_loss`)
  from the (detached) ensemble of the normal and anchor branches.
- DePT: `dept_loss` (prompt cross-entropy and the linear head's cross-entropy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from anchoropt.errors import ConfigError
from anchoropt.method.descriptions import DescriptionFeatures

CE_WEIGHT_KEY = "TRAINER.ANCHOROPT.PROMPT_CE_WEIGHT"
KD_WEIGHT_KEY = "TRAINER.ANCHOROPT.KD_WEIGHT"
KD_TEMPERATURE_KEY = "TRAINER.ANCHOROPT.KD_TEMPERATURE"


def check_loss_settings(ce_weight: float, kd_weight: float, kd_temperature: float) -> None:
    """Raise ConfigError for weights/temperature that cannot define the loss.

    The temperature is only used when distillation is on, so a KD weight of 0
    accepts any temperature (the published MaPLe StanfordCars setting is 0/0).
    """
    if ce_weight < 0:
        raise ConfigError(f"{CE_WEIGHT_KEY} must be >= 0, got {ce_weight}")
    if kd_weight < 0:
        raise ConfigError(f"{KD_WEIGHT_KEY} must be >= 0, got {kd_weight}")
    if kd_weight > 0 and not kd_temperature > 0:
        raise ConfigError(
            f"{KD_TEMPERATURE_KEY} must be > 0 when {KD_WEIGHT_KEY} > 0 (got temperature {kd_temperature}, weight "
            f"{kd_weight}); "
            f"set {KD_WEIGHT_KEY} 0 to switch distillation off"
        )


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(teacher/T) ‖ softmax(student/T)), summed and divided by the number of logits (B·C).

    Computed in fp32 whatever the logits' dtype. The teacher is used as given:
    detach it before calling if no gradient should reach it.
    """
    if not temperature > 0:
        raise ConfigError(f"{KD_TEMPERATURE_KEY} must be > 0 for distillation, got {temperature}")
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    divergence = F.kl_div(log_student, log_teacher, reduction="sum", log_target=True)
    return divergence / student_logits.numel() * temperature**2


def anchoropt_loss(
    normal_logits: torch.Tensor,
    anchor_logits: torch.Tensor | None,
    labels: torch.Tensor,
    ce_weight: float,
    kd_weight: float,
    kd_temperature: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """λ₁·CE(z_n, y) + λ₂·kd(z_n, teacher=(z_n + z_a)/2 detached).

    Returns the total loss and the unweighted, detached parts {"ce", "kd"}
    ("kd" is 0 when distillation is off; the anchor logits are then unused and may be None).
    """
    check_loss_settings(ce_weight, kd_weight, kd_temperature)
    ce = F.cross_entropy(normal_logits.float(), labels)
    total = ce_weight * ce
    if kd_weight > 0:
        if anchor_logits is None:
            raise ValueError("anchor logits are needed when the KD weight is > 0")
        teacher = ((normal_logits + anchor_logits) / 2).detach()
        kd = kd_loss(normal_logits, teacher, kd_temperature)
        total = total + kd_weight * kd
    else:
        kd = torch.zeros((), device=ce.device)
    return total, {"ce": ce.detach(), "kd": kd.detach()}


def description_mse(anchor_features: torch.Tensor, descriptions: DescriptionFeatures) -> torch.Tensor:
    """Mean over (class, sentence, dim) of (z_c - d_{c,k})², z_c the normalised anchor-prompt features [C, e].

    With the same number of sentences per class this is exactly ``nn.MSELoss`` between z
    repeated K times and the [C, K, e] description features (the official loss).
    """
    if anchor_features.shape[0] != descriptions.num_classes:
        raise ValueError(
            f"{anchor_features.shape[0]} anchor-prompt features for {descriptions.num_classes} described classes"
        )
    diff = anchor_features.float()[descriptions.owner] - descriptions.features
    return diff.pow(2).mean()


def dept_loss(
    sim: torch.Tensor, labels: torch.Tensor, head_logits: torch.Tensor, head_labels: torch.Tensor, weight: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(1 − w)·CE(sim, y) + w·CE(head)``; returns the loss and the detached parts {"ce", "head"}."""
    ce = F.cross_entropy(sim.float(), labels)
    head = F.cross_entropy(head_logits.float(), head_labels)
    return (1 - weight) * ce + weight * head, {"ce": ce.detach(), "head": head.detach()}
