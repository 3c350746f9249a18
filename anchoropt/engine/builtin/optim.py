"""Optimizer builder with Dassl's ``OPTIM.*`` keys."""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn as nn

from anchoropt.errors import ConfigError

AVAILABLE_OPTIMIZERS = ("adam", "amsgrad", "sgd", "rmsprop", "adamw")


def build_optimizer(model: nn.Module | Iterable, optim_cfg: Any, param_groups=None) -> torch.optim.Optimizer:
    name = optim_cfg.NAME
    lr = optim_cfg.LR
    wd = optim_cfg.WEIGHT_DECAY
    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)
    if name not in AVAILABLE_OPTIMIZERS:
        raise ConfigError(f"OPTIM.NAME must be one of {list(AVAILABLE_OPTIMIZERS)}, got {name!r}")

    if param_groups is None:
        if optim_cfg.STAGED_LR:
            if not isinstance(model, nn.Module):
                raise ConfigError("OPTIM.STAGED_LR needs an nn.Module to split into base and new layers")
            if isinstance(model, nn.DataParallel):
                model = model.module
            new_layers = optim_cfg.NEW_LAYERS
            new_layers = [new_layers] if isinstance(new_layers, str) else list(new_layers)
            base_params, new_params = [], []
            for child_name, module in model.named_children():
                (new_params if child_name in new_layers else base_params).extend(module.parameters())
            param_groups = [{"params": base_params, "lr": lr * optim_cfg.BASE_LR_MULT}, {"params": new_params}]
        else:
            param_groups = model.parameters() if isinstance(model, nn.Module) else model

    if name == "sgd":
        return torch.optim.SGD(
            param_groups,
            lr=lr,
            momentum=optim_cfg.MOMENTUM,
            weight_decay=wd,
            dampening=optim_cfg.SGD_DAMPNING,
            nesterov=optim_cfg.SGD_NESTEROV,
        )
    if name in ("adam", "amsgrad"):
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=wd, betas=betas, amsgrad=name == "amsgrad")
    if name == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr, weight_decay=wd, betas=betas)
    return torch.optim.RMSprop(
        param_groups, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd, alpha=optim_cfg.RMSPROP_ALPHA
    )
