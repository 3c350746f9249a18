"""The LR schedule equals Dassl's epoch by epoch (values, not just "it changed")."""

import math

import pytest
import torch

from anchoropt.config import get_default_config
from anchoropt.engine import build_lr_scheduler, build_optimizer
from anchoropt.engine.checkpoint import load_checkpoint, save_checkpoint


def _optim_cfg(**kw):
    cfg = get_default_config()
    cfg.OPTIM.NAME = "sgd"
    cfg.OPTIM.LR = 0.002
    for k, v in kw.items():
        setattr(cfg.OPTIM, k, v)
    return cfg.OPTIM


def _lrs_per_epoch(optim_cfg, epochs):
    model = torch.nn.Linear(2, 2)
    optim = build_optimizer(model, optim_cfg)
    sched = build_lr_scheduler(optim, optim_cfg)
    lrs = []
    for _ in range(epochs):
        lrs.append(optim.param_groups[0]["lr"])
        optim.step()
        sched.step()
    return lrs


def dassl_constant_warmup_cosine(base, cons, warmup, max_epoch, epochs):
    """Dassl's ConstantWarmupScheduler(CosineAnnealingLR) with WARMUP_RECOUNT=True, written out by hand."""
    out = []
    for e in range(epochs):
        if e < warmup:
            out.append(cons)
        else:
            t = e - warmup
            out.append(0.5 * base * (1 + math.cos(math.pi * t / max_epoch)))
    return out


@pytest.mark.parametrize("max_epoch", [1, 5, 20])
def test_constant_warmup_then_cosine(max_epoch):
    cfg = _optim_cfg(
        LR_SCHEDULER="cosine", MAX_EPOCH=max_epoch, WARMUP_EPOCH=1, WARMUP_TYPE="constant", WARMUP_CONS_LR=1e-5
    )
    got = _lrs_per_epoch(cfg, max_epoch)
    want = dassl_constant_warmup_cosine(0.002, 1e-5, 1, max_epoch, max_epoch)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-15)
    assert got[0] == 1e-5 and (max_epoch == 1 or got[1] == pytest.approx(0.002))


def test_linear_warmup_then_cosine():
    cfg = _optim_cfg(LR_SCHEDULER="cosine", MAX_EPOCH=6, WARMUP_EPOCH=3, WARMUP_TYPE="linear", WARMUP_MIN_LR=1e-4)
    got = _lrs_per_epoch(cfg, 8)
    # Dassl's LinearWarmupScheduler: min_lr at 0, then base * e / warmup, then the successor from its start.
    want = [1e-4, 0.002 / 3, 0.002 * 2 / 3] + [0.5 * 0.002 * (1 + math.cos(math.pi * t / 6)) for t in range(5)]
    assert got == pytest.approx(want, rel=1e-9)


def test_no_warmup_multistep_and_single_step():
    got = _lrs_per_epoch(_optim_cfg(LR_SCHEDULER="multi_step", STEPSIZE=(2, 4), GAMMA=0.1), 6)
    assert got == pytest.approx([0.002, 0.002, 0.0002, 0.0002, 0.00002, 0.00002])
    got = _lrs_per_epoch(_optim_cfg(LR_SCHEDULER="single_step", STEPSIZE=(-1,), MAX_EPOCH=3), 4)
    assert got == pytest.approx([0.002, 0.002, 0.002, 0.0002])


def test_warmup_without_recount_continues_successor_from_warmup_epoch():
    cfg = _optim_cfg(LR_SCHEDULER="cosine", MAX_EPOCH=10, WARMUP_EPOCH=2, WARMUP_TYPE="constant", WARMUP_RECOUNT=False)
    got = _lrs_per_epoch(cfg, 5)
    # Dassl sets the successor's last_epoch to WARMUP_EPOCH, then torch's chainable cosine update applies
    # (1 + cos(pi t / T)) / (1 + cos(pi (t-1) / T)) to the current LR.
    lr3 = 0.002 * (1 + math.cos(math.pi * 3 / 10)) / (1 + math.cos(math.pi * 2 / 10))
    lr4 = lr3 * (1 + math.cos(math.pi * 4 / 10)) / (1 + math.cos(math.pi * 3 / 10))
    assert got == pytest.approx([1e-5, 1e-5, 0.002, lr3, lr4], rel=1e-9)


def test_scheduler_state_round_trips_through_a_safe_checkpoint(tmp_path):
    cfg = _optim_cfg(LR_SCHEDULER="cosine", MAX_EPOCH=8, WARMUP_EPOCH=1, WARMUP_TYPE="constant")
    model = torch.nn.Linear(2, 2)
    optim = build_optimizer(model, cfg)
    sched = build_lr_scheduler(optim, cfg)
    for _ in range(3):
        optim.step()
        sched.step()
    save_checkpoint(
        {
            "state_dict": model.state_dict(),
            "epoch": 3,
            "optimizer": optim.state_dict(),
            "scheduler": sched.state_dict(),
        },
        str(tmp_path),
    )
    ckpt = load_checkpoint(str(tmp_path / "model.pth.tar-3"))  # weights_only=True inside
    model2 = torch.nn.Linear(2, 2)
    optim2 = build_optimizer(model2, cfg)
    sched2 = build_lr_scheduler(optim2, cfg)
    optim2.load_state_dict(ckpt["optimizer"])
    sched2.load_state_dict(ckpt["scheduler"])
    for _ in range(4):
        assert optim2.param_groups[0]["lr"] == pytest.approx(optim.param_groups[0]["lr"], rel=1e-12)
        optim.step()
        optim2.step()
        sched.step()
        sched2.step()
