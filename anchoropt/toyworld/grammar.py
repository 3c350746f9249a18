"""The toy world's vocabulary: attributes, their synonyms, caption templates and class descriptions.

Everything here is plain data plus small pure functions drawing from a ``random.Random`` passed in, so
captions and descriptions are reproducible from a seed and never touch global random state.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Colour:
    name: str
    rgb: tuple[int, int, int]
    synonyms: tuple[str, ...]  # first entry = the name used in class names
    likeness: str  # for descriptions: "red like a tomato"


@dataclass(frozen=True)
class Shape:
    name: str
    synonyms: tuple[str, ...]
    facts: tuple[str, ...]  # what the shape looks like, for captions and descriptions


@dataclass(frozen=True)
class Pattern:
    name: str
    adjectives: tuple[str, ...]  # "striped"
    phrases: tuple[str, ...]  # "with stripes"


COLOURS: tuple[Colour, ...] = (
    Colour("red", (220, 40, 40), ("red", "scarlet", "crimson"), "like a ripe tomato"),
    Colour("green", (40, 185, 60), ("green", "emerald"), "like fresh grass"),
    Colour("blue", (45, 90, 235), ("blue", "azure"), "like a clear sky"),
    Colour("yellow", (240, 215, 40), ("yellow", "golden"), "like a lemon"),
    Colour("purple", (150, 60, 200), ("purple", "violet"), "like a plum"),
    Colour("orange", (245, 140, 25), ("orange", "amber"), "like a tangerine"),
    Colour("cyan", (40, 210, 215), ("cyan", "turquoise"), "like tropical water"),
    Colour("pink", (245, 135, 195), ("pink", "rosy"), "like a flamingo"),
    Colour("white", (240, 240, 240), ("white", "snowy"), "like fresh snow"),
    Colour("brown", (135, 85, 40), ("brown", "chocolate"), "like tree bark"),
)

SHAPES: tuple[Shape, ...] = (
    Shape("circle", ("circle", "disc"), ("it is perfectly round", "it has no corners")),
    Shape("square", ("square", "box"), ("it has four equal sides", "it has four right angles")),
    Shape("triangle", ("triangle",), ("it has three sides", "it has three sharp corners")),
    Shape("star", ("star",), ("it has five points", "its points stick out like rays")),
    Shape("cross", ("cross", "plus"), ("it is made of two crossing bars", "it looks like a plus sign")),
    Shape("diamond", ("diamond", "rhombus"), ("it stands on one corner", "it is a tilted square")),
    Shape("hexagon", ("hexagon",), ("it has six sides", "it looks like a honeycomb cell")),
    Shape("heart", ("heart",), ("it has two round lobes on top", "it has a point at the bottom")),
    Shape("crescent", ("crescent", "moon"), ("it is curved like a thin moon", "it has two sharp tips")),
    Shape("arrow", ("arrow",), ("it has a pointed head", "it has a long straight shaft")),
)

PATTERNS: tuple[Pattern, ...] = (
    Pattern("plain", ("plain", "solid"), ("in one flat colour", "with no pattern")),
    Pattern("striped", ("striped", "stripy"), ("with stripes", "with bands of colour")),
    Pattern("dotted", ("dotted", "spotted"), ("with dots", "with spots")),
    Pattern("checkered", ("checkered", "chequered"), ("with checks", "with a grid of squares")),
)

SIZES = {"small": ("small", "tiny", "little"), "large": ("large", "big", "huge")}
# Rendering styles of the world: pretraining mostly sees "photo"; the others are the shifted domains.
STYLE_WORDS = {
    "photo": ("a photo of", "a picture of", "an image of"),
    "sketch": ("a sketch of", "a drawing of", "an outline of"),
    "clutter": ("a cluttered photo of", "a messy picture of", "a noisy photo of"),
    "pixel": ("a pixelated picture of", "a blocky rendering of", "a low resolution image of"),
    "faded": ("a faded photo of", "a washed out picture of", "a pale image of"),
}
BACKGROUNDS = ("dark", "grey", "black", "dim", "gloomy")

COLOUR_BY_NAME = {c.name: c for c in COLOURS}
SHAPE_BY_NAME = {s.name: s for s in SHAPES}
PATTERN_BY_NAME = {p.name: p for p in PATTERNS}


@dataclass(frozen=True)
class Scene:
    """What one image shows (and what its caption may say)."""

    colour: str
    shape: str
    pattern: str = "plain"
    size: str = ""  # "small" / "large" when the object is clearly one of them, else ""
    style: str = "photo"


def class_name(colour: Optional[str], shape: str, pattern: Optional[str] = None) -> str:
    """A class name made of words: ``[pattern] [colour] shape`` ("striped red star", "red star", "striped star")."""
    return " ".join(w for w in (pattern, colour, shape) if w)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def object_phrase(scene: Scene, rng: random.Random) -> str:
    """The noun phrase of a caption: synonyms, optional attributes, adjective or trailing phrase for patterns."""
    colour = rng.choice(COLOUR_BY_NAME[scene.colour].synonyms)
    shape = rng.choice(SHAPE_BY_NAME[scene.shape].synonyms)
    pattern = PATTERN_BY_NAME[scene.pattern]
    words = [colour, shape]
    if rng.random() < 0.08:  # captions, like web text, sometimes leave the colour out
        words = [shape]
    tail = ""
    if scene.pattern != "plain" or rng.random() < 0.35:
        if rng.random() < 0.7:
            words.insert(0, rng.choice(pattern.adjectives))
        else:
            tail = " " + rng.choice(pattern.phrases)
    if scene.size and rng.random() < 0.7:
        words.insert(0, rng.choice(SIZES[scene.size]))
    return " ".join(words) + tail


CAPTION_TEMPLATES = (
    "{style} {a} {obj}.",
    "{style} {a} {obj}.",
    "a photo of {a} {obj}.",
    "a photo of {a} {obj}.",
    "{a} {obj}.",
    "{obj}.",
    "there is {a} {obj} on a {bg} background.",
    "{style} {a} {obj} on a {bg} background.",
    "{a} {obj}, {fact}.",
    "{style} {a} {obj}, where {fact}.",
    "this is {a} {obj}.",
    "{a} {obj} in the picture.",
)


def caption(scene: Scene, rng: random.Random) -> str:
    """One random caption of ``scene`` from the templates (a fresh one per pretraining step)."""
    obj = object_phrase(scene, rng)
    template = rng.choice(CAPTION_TEMPLATES)
    style = rng.choice(STYLE_WORDS[scene.style])
    if scene.style == "photo" and rng.random() < 0.5:
        style = rng.choice(STYLE_WORDS["photo"])
    return template.format(
        style=style,
        a=_article(obj),
        obj=obj,
        bg=rng.choice(BACKGROUNDS),
        fact=rng.choice(SHAPE_BY_NAME[scene.shape].facts),
    )


def parse_class_name(name: str) -> tuple[Optional[str], Optional[str], str]:
    """``(pattern, colour, shape)`` of a class name made by ``class_name``; ValueError for other names."""
    words = name.split()
    if not words or words[-1] not in SHAPE_BY_NAME:
        raise ValueError(f"not a toy-world class name: {name!r} (expected '[pattern] [colour] shape')")
    pattern = colour = None
    for w in words[:-1]:
        if w in PATTERN_BY_NAME and pattern is None and colour is None:
            pattern = w
        elif w in COLOUR_BY_NAME and colour is None:
            colour = w
        else:
            raise ValueError(f"not a toy-world class name: {name!r} (unexpected word {w!r})")
    return pattern, colour, words[-1]


def describe(name: str, count: int = 10, seed: int = 0) -> list[str]:
    """``count`` CuPL-style sentences about class ``name`` (LLM descriptions stand-in), reproducible from ``seed``."""
    pattern, colour, shape = parse_class_name(name)
    rng = random.Random(f"{seed}:{name}")
    shape_info = SHAPE_BY_NAME[shape]
    sentences: list[str] = []
    obj = name
    pool = [f"{_article(obj)} {obj} is a shape; {fact}." for fact in shape_info.facts]
    pool += [f"the {obj} is a kind of {syn}." for syn in shape_info.synonyms]
    if colour:
        c = COLOUR_BY_NAME[colour]
        pool += [
            f"{_article(obj)} {obj} is {colour}, {c.likeness}.",
            f"the {shape} is coloured {rng.choice(c.synonyms)}.",
            f"{_article(obj)} {obj} is a {colour} {shape} on a dark background.",
        ]
    if pattern:
        p = PATTERN_BY_NAME[pattern]
        pool += [
            f"{_article(obj)} {obj} is covered {p.phrases[0]}.",
            f"the {shape} is {rng.choice(p.adjectives)}, {p.phrases[1]}.",
        ]
    pool += [
        f"a photo of {_article(obj)} {obj}.",
        f"{_article(obj)} {obj}, {shape_info.facts[0]}.",
        f"{_article(obj)} {obj} seen from the front.",
        f"a drawing of {_article(obj)} {obj}.",
    ]
    rng.shuffle(pool)
    while len(sentences) < count:
        sentences += pool[: count - len(sentences)]
    return sentences


def vocabulary_texts() -> list[str]:
    """Every word and phrase the grammar (captions, descriptions, class names) can produce, for the token list."""
    texts = [w for c in COLOURS for w in c.synonyms] + [c.likeness for c in COLOURS]
    texts += [w for s in SHAPES for w in s.synonyms] + [f for s in SHAPES for f in s.facts]
    texts += [w for p in PATTERNS for w in (*p.adjectives, *p.phrases)]
    texts += [w for ws in SIZES.values() for w in ws] + [w for ws in STYLE_WORDS.values() for w in ws]
    texts += list(BACKGROUNDS) + list(CAPTION_TEMPLATES)
    texts += [
        "a an the is are of on in with where this there picture shape coloured covered seen from front "
        "drawing photo background dark X , . ; :"
    ]
    return texts
