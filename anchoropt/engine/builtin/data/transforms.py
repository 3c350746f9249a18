"""Image transforms built from ``INPUT.TRANSFORMS`` (Dassl's choices and order).

CoOp-style configs set ``INTERPOLATION: bicubic`` and CLIP's mean/std; the
defaults are Dassl's (bilinear, ImageNet statistics).
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision.transforms as T
from torchvision.transforms import InterpolationMode

from anchoropt.errors import ConfigError

INTERPOLATION_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}

AVAILABLE_CHOICES = (
    "random_flip",
    "random_resized_crop",
    "normalize",
    "instance_norm",
    "random_crop",
    "random_translation",
    "center_crop",
    "cutout",
    "gaussian_noise",
    "colorjitter",
    "randomgrayscale",
    "gaussian_blur",
)


class Random2DTranslation:
    """With probability p, enlarge by 1/8 and take a random crop of the target size."""

    def __init__(self, height: int, width: int, p: float = 0.5, interpolation=InterpolationMode.BILINEAR) -> None:
        self.height, self.width, self.p, self.interpolation = height, width, p, interpolation

    def __call__(self, img):
        if torch.rand(1).item() > self.p:
            return T.functional.resize(img, [self.height, self.width], interpolation=self.interpolation)
        big_w, big_h = round(self.width * 1.125), round(self.height * 1.125)
        img = T.functional.resize(img, [big_h, big_w], interpolation=self.interpolation)
        top = int(torch.randint(0, big_h - self.height + 1, (1,)).item())
        left = int(torch.randint(0, big_w - self.width + 1, (1,)).item())
        return T.functional.crop(img, top, left, self.height, self.width)


class Cutout:
    """Zero ``n_holes`` random squares of side ``length`` in a CHW tensor."""

    def __init__(self, n_holes: int = 1, length: int = 16) -> None:
        self.n_holes, self.length = n_holes, length

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[1:3]
        mask = torch.ones(h, w)
        for _ in range(self.n_holes):
            y, x = int(torch.randint(h, (1,))), int(torch.randint(w, (1,)))
            y1, y2 = max(0, y - self.length // 2), min(h, y + self.length // 2)
            x1, x2 = max(0, x - self.length // 2), min(w, x + self.length // 2)
            mask[y1:y2, x1:x2] = 0
        return img * mask


class GaussianNoise:
    def __init__(self, mean: float = 0.0, std: float = 0.15, p: float = 0.5) -> None:
        self.mean, self.std, self.p = mean, std, p

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if torch.rand(1).item() > self.p:
            return img
        return img + torch.randn(img.size()) * self.std + self.mean


class InstanceNormalization:
    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        c = img.shape[0]
        flat = img.reshape(c, -1)
        mean = flat.mean(1).view(c, 1, 1)
        std = flat.std(1).view(c, 1, 1)
        return (img - mean) / (std + 1e-8)


def build_transform(cfg: Any, is_train: bool = True, choices=None):
    if cfg.INPUT.NO_TRANSFORM:
        print("Note: no transform is applied!")
        return None
    choices = cfg.INPUT.TRANSFORMS if choices is None else choices
    unknown = [c for c in choices if c not in AVAILABLE_CHOICES]
    if unknown:
        raise ConfigError(f"INPUT.TRANSFORMS has unknown choices {unknown}; available: {list(AVAILABLE_CHOICES)}")
    if cfg.INPUT.INTERPOLATION not in INTERPOLATION_MODES:
        raise ConfigError(
            f"INPUT.INTERPOLATION must be one of {list(INTERPOLATION_MODES)}, got {cfg.INPUT.INTERPOLATION!r}"
        )
    normalize = T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD)
    builder = _build_transform_train if is_train else _build_transform_test
    return builder(cfg, choices, normalize)


def _build_transform_train(cfg: Any, choices, normalize) -> T.Compose:
    interp = INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]
    size = tuple(cfg.INPUT.SIZE)
    tfm: list = []
    if "random_crop" not in choices and "random_resized_crop" not in choices:
        tfm.append(T.Resize(size, interpolation=interp))
    if "random_translation" in choices:
        tfm.append(Random2DTranslation(size[0], size[1]))
    if "random_crop" in choices:
        tfm.append(T.RandomCrop(size, padding=cfg.INPUT.CROP_PADDING))
    if "random_resized_crop" in choices:
        tfm.append(T.RandomResizedCrop(size, scale=tuple(cfg.INPUT.RRCROP_SCALE), interpolation=interp))
    if "random_flip" in choices:
        tfm.append(T.RandomHorizontalFlip())
    if "colorjitter" in choices:
        tfm.append(
            T.ColorJitter(
                brightness=cfg.INPUT.COLORJITTER_B,
                contrast=cfg.INPUT.COLORJITTER_C,
                saturation=cfg.INPUT.COLORJITTER_S,
                hue=cfg.INPUT.COLORJITTER_H,
            )
        )
    if "randomgrayscale" in choices:
        tfm.append(T.RandomGrayscale(p=cfg.INPUT.RGS_P))
    if "gaussian_blur" in choices:
        tfm.append(T.RandomApply([T.GaussianBlur(cfg.INPUT.GB_K)], p=cfg.INPUT.GB_P))
    tfm.append(T.ToTensor())
    if "cutout" in choices:
        tfm.append(Cutout(cfg.INPUT.CUTOUT_N, cfg.INPUT.CUTOUT_LEN))
    if "normalize" in choices:
        tfm.append(normalize)
    if "gaussian_noise" in choices:
        tfm.append(GaussianNoise(cfg.INPUT.GN_MEAN, cfg.INPUT.GN_STD))
    if "instance_norm" in choices:
        tfm.append(InstanceNormalization())
    return T.Compose(tfm)


def _build_transform_test(cfg: Any, choices, normalize) -> T.Compose:
    interp = INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]
    size = tuple(cfg.INPUT.SIZE)
    tfm = [T.Resize(max(size), interpolation=interp), T.CenterCrop(size), T.ToTensor()]
    if "normalize" in choices:
        tfm.append(normalize)
    if "instance_norm" in choices:
        tfm.append(InstanceNormalization())
    return T.Compose(tfm)
