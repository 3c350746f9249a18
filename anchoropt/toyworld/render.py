"""Draw toy-world images with PIL: a patterned shape with nuisances (position, scale, rotation, background, noise).

Images are drawn at ``2 * size`` and downsampled (anti-aliasing). Each rendering style is a domain: "photo"
(pretraining's main domain), "sketch" (outline on paper), "clutter" (distractors, heavy noise), "pixel"
(blocky, gradient background) and "faded" (low contrast, blur); the domain-generalisation variants use them.
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from anchoropt.toyworld.grammar import COLOUR_BY_NAME, Scene

STYLES = ("photo", "sketch", "clutter", "pixel", "faded")


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Outline points of a polygonal shape of radius ``r`` centred at (cx, cy), rotated by ``angle``."""
    if shape == "square":
        pts = [(math.cos(a), math.sin(a)) for a in (math.pi / 4 + k * math.pi / 2 for k in range(4))]
        pts = [(x * 0.95, y * 0.95) for x, y in pts]
    elif shape == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
    elif shape == "diamond":
        pts = [(0, -1), (0.62, 0), (0, 1), (-0.62, 0)]
    elif shape == "hexagon":
        pts = [(math.cos(a), math.sin(a)) for a in (k * math.pi / 3 for k in range(6))]
    elif shape == "star":
        pts = [
            ((1.0 if k % 2 == 0 else 0.42) * math.cos(a), (1.0 if k % 2 == 0 else 0.42) * math.sin(a))
            for k, a in enumerate(-math.pi / 2 + k * math.pi / 5 for k in range(10))
        ]
    elif shape == "cross":
        w = 0.33
        pts = [
            (-w, -1),
            (w, -1),
            (w, -w),
            (1, -w),
            (1, w),
            (w, w),
            (w, 1),
            (-w, 1),
            (-w, w),
            (-1, w),
            (-1, -w),
            (-w, -w),
        ]
    elif shape == "arrow":
        pts = [(-1, -0.22), (0.2, -0.22), (0.2, -0.6), (1, 0), (0.2, 0.6), (0.2, 0.22), (-1, 0.22)]
    elif shape == "heart":
        pts = []
        for k in range(40):
            t = 2 * math.pi * k / 40
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((x / 17, -y / 17 + 0.05))
    elif shape == "circle":
        pts = [(math.cos(2 * math.pi * k / 36), math.sin(2 * math.pi * k / 36)) for k in range(36)]
    elif shape == "crescent":
        # outer arc, then the inner arc of a circle shifted right, back: a thick crescent opening to the right
        outer = [(math.cos(a), math.sin(a)) for a in np.linspace(0.35 * math.pi, 1.65 * math.pi, 24)]
        inner = [(0.45 + 0.8 * math.cos(a), 0.8 * math.sin(a)) for a in np.linspace(1.55 * math.pi, 0.45 * math.pi, 24)]
        pts = outer + inner
    else:
        raise ValueError(f"unknown toy-world shape {shape!r}")
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in pts]


def _pattern_fill(pattern: str, rgb: tuple[int, int, int], size: int, rng: random.Random) -> Image.Image:
    """A ``size`` x ``size`` texture in the object's colour; patterns alternate it with a dark shade of it."""
    img = Image.new("RGB", (size, size), rgb)
    if pattern == "plain":
        return img
    dark = tuple(int(v * 0.3) for v in rgb)
    draw = ImageDraw.Draw(img)
    period = rng.choice((8, 10))
    if pattern == "striped":
        angle = rng.uniform(0, math.pi)
        dx, dy = math.cos(angle), math.sin(angle)
        half = period / 2
        for k in range(-2 * size // period, 2 * size // period + 1):
            off = k * period
            cx, cy = size / 2 + dx * off, size / 2 + dy * off
            # a band of width half-period across the whole tile, perpendicular to (dx, dy)
            px, py = -dy * size * 1.5, dx * size * 1.5
            draw.polygon(
                [
                    (cx + px, cy + py),
                    (cx - px, cy - py),
                    (cx - px + dx * half, cy - py + dy * half),
                    (cx + px + dx * half, cy + py + dy * half),
                ],
                fill=dark,
            )
    elif pattern == "dotted":
        rad = period * 0.28
        for y in range(period // 2, size, period):
            for x in range(period // 2 + (period // 2 if (y // period) % 2 else 0), size, period):
                draw.ellipse([x - rad, y - rad, x + rad, y + rad], fill=dark)
    elif pattern == "checkered":
        cell = period // 2 + 1
        for y in range(0, size, cell):
            for x in range(0, size, cell):
                if (x // cell + y // cell) % 2:
                    draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=dark)
    else:
        raise ValueError(f"unknown toy-world pattern {pattern!r}")
    return img


def _background(style: str, size: int, rng: random.Random) -> Image.Image:
    if style == "sketch":  # paper
        v = rng.randint(195, 235)
        return Image.new("RGB", (size, size), (v, v, v - rng.randint(0, 15)))
    if style == "pixel":  # vertical gradient between two dim colours
        a = [rng.randint(10, 90) for _ in range(3)]
        b = [rng.randint(10, 90) for _ in range(3)]
        t = np.linspace(0, 1, size)[:, None, None]
        arr = (np.array(a)[None, None] * (1 - t) + np.array(b)[None, None] * t) * np.ones((1, size, 1))
        return Image.fromarray(arr.astype(np.uint8))
    base = rng.randint(15, 80)
    tint = [max(0, min(255, base + rng.randint(-12, 12))) for _ in range(3)]
    return Image.new("RGB", (size, size), tuple(tint))


def scale_for(size_word: str, rng: random.Random) -> float:
    """Object radius as a fraction of half the image: "small" and "large" are clearly apart, "" is anything."""
    if size_word == "small":
        return rng.uniform(0.35, 0.5)
    if size_word == "large":
        return rng.uniform(0.8, 0.95)
    return rng.uniform(0.45, 0.9)


def render(scene: Scene, rng: random.Random, size: int = 32) -> Image.Image:
    """The image of ``scene`` (an RGB ``size`` x ``size`` PIL image); nuisances drawn from ``rng``."""
    big = size * 2
    rgb = COLOUR_BY_NAME[scene.colour].rgb
    img = _background(scene.style, big, rng)
    if scene.style == "clutter":  # distractor strokes and blobs in greyish colours
        draw = ImageDraw.Draw(img)
        for _ in range(rng.randint(3, 6)):
            grey = rng.randint(60, 150)
            col = (grey + rng.randint(-20, 20), grey + rng.randint(-20, 20), grey + rng.randint(-20, 20))
            if rng.random() < 0.6:
                draw.line([(rng.uniform(0, big), rng.uniform(0, big)) for _ in range(2)], fill=col, width=2)
            else:
                x, y, r = rng.uniform(0, big), rng.uniform(0, big), rng.uniform(2, 6)
                draw.ellipse([x - r, y - r, x + r, y + r], fill=col)
    radius = scale_for(scene.size, rng) * big / 2
    margin = radius * 0.9
    cx = rng.uniform(min(margin, big / 2), max(big - margin, big / 2))
    cy = rng.uniform(min(margin, big / 2), max(big - margin, big / 2))
    mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask).polygon(_polygon(scene.shape, cx, cy, radius, rng.uniform(-0.5, 0.5)), fill=255)
    if scene.style == "sketch":  # outline only
        outer = np.asarray(mask.filter(ImageFilter.MaxFilter(5)), dtype=np.int16)
        inner = np.asarray(mask.filter(ImageFilter.MinFilter(3)), dtype=np.int16)
        mask = Image.fromarray((outer - inner).clip(0, 255).astype(np.uint8))
    fill = _pattern_fill(scene.pattern, rgb, big, rng)
    img.paste(fill, (0, 0), mask)
    if scene.style == "pixel":
        img = img.resize((size // 2, size // 2), Image.BOX).resize((size, size), Image.NEAREST)
    else:
        img = img.resize((size, size), Image.BOX)
    arr = np.asarray(img, dtype=np.float32)
    if scene.style == "faded":  # low contrast towards grey, slight blur
        arr = arr * 0.55 + 100
        arr = np.asarray(
            Image.fromarray(arr.clip(0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float32
        )
    sigma = {"clutter": 18.0, "faded": 6.0, "sketch": 4.0}.get(scene.style, 5.0)
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, sigma, arr.shape)
    return Image.fromarray((arr + noise).clip(0, 255).astype(np.uint8))
