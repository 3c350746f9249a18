"""Running averages and the progress bar used by the epoch loop."""

from __future__ import annotations

import sys
from collections import defaultdict

import torch
from tqdm import tqdm


class AverageMeter:
    def __init__(self, ema: bool = False, momentum: float = 0.1) -> None:
        self.ema, self.momentum = ema, momentum
        self.reset()

    def reset(self) -> None:
        self.val = self.avg = self.sum = 0.0
        self.count = 0

    def update(self, val: float, n: int = 1) -> None:
        if isinstance(val, torch.Tensor):
            val = val.item()
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = (1 - self.momentum) * self.avg + self.momentum * val if self.ema else self.sum / self.count


class MetricMeter:
    def __init__(self, delimiter: str = " ") -> None:
        self.meters: dict[str, AverageMeter] = defaultdict(AverageMeter)
        self.delimiter = delimiter

    def update(self, input_dict: dict | None) -> None:
        if input_dict is None:
            return
        if not isinstance(input_dict, dict):
            raise TypeError("Input to MetricMeter.update() must be a dictionary")
        for k, v in input_dict.items():
            self.meters[k].update(v.item() if isinstance(v, torch.Tensor) else v)

    def __str__(self) -> str:
        return self.delimiter.join(f"{name} {m.val:.4f} ({m.avg:.4f})" for name, m in self.meters.items())


def progress(iterable, **kwargs):
    """A tqdm bar when a person is watching a terminal; plain iteration otherwise."""
    stream = getattr(sys.stdout, "console", sys.stdout)
    return tqdm(iterable, file=stream, leave=False, **kwargs) if stream.isatty() else iterable
