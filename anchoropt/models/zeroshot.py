"""Hand-written prompts for zero-shot CLIP (the templates CoOp's baselines use)."""

from __future__ import annotations

from typing import Sequence

import torch

from anchoropt.backbone import TextEncoder
from anchoropt.models.clip_parts import normalize

# One template per dataset, as in CoOp's zero-shot CLIP baseline.
DATASET_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}
DEFAULT_TEMPLATE = "a photo of a {}."

# The seven-template ensemble CLIP's authors selected for ImageNet.
IMAGENET_ENSEMBLE = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


def templates_for(dataset: str, ensemble: bool = False) -> list[str]:
    """The dataset's template; with ``ensemble`` the ImageNet ensemble plus it (CoOp's ZeroshotCLIP2)."""
    own = DATASET_TEMPLATES.get(dataset, DEFAULT_TEMPLATE)
    if not ensemble:
        return [own]
    return list(IMAGENET_ENSEMBLE) + ([own] if own not in IMAGENET_ENSEMBLE else [])


@torch.no_grad()
def class_text_features(text_encoder: TextEncoder, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """Normalised class features: the mean of the normalised features over ``templates``, renormalised."""
    names = [c.replace("_", " ") for c in classnames]
    sentences = [t.format(name) for t in templates for name in names]
    feats = normalize(text_encoder.encode_texts(sentences)).view(len(templates), len(names), -1)
    return normalize(feats.mean(0))
