"""Trainers whose image encoder is frozen and unprompted: test features from the on-disk cache, and
optionally training on K cached augmented views per image.

`ClipTrainer` mixes `FrozenImageFeatures` in; a trainer opts in with ``IMAGE_ENCODER_FROZEN = True``
(CoOp, CoCoOp, DePT, zero-shot CLIP, Stage I and their AnchorOPT variants). Its model must encode
images with `anchoropt.models.clip_parts.ImageEncoder` (``self.model.image_encoder``, or override
`frozen_image_encoder`), which accepts the cached features in place of images. MaPLe keeps encoding:
its prompts enter the image tower.

- **Evaluation** (``FEATURE_CACHE.ENABLED``, on by default): `evaluation_batches` returns the test
  loader's batches as features read from the cache, encoding and storing them first when the entry
  is missing. The key covers the backbone's weights, the precision and device kind, the transform
  and the exact image list, so results with and without the cache are the same (bit for bit in fp32
  for the same test batch size).
- **Training** (``FEATURE_CACHE.TRAIN_VIEWS`` K > 0, opt-in): before training, K augmented views of
  every training image are encoded once (the training transform, the run's random streams); each
  epoch then serves, for each image, one of its K views in the loader's own order. This changes the
  training distribution: an image is only ever seen in K augmentations instead of a fresh one per
  epoch.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

import torch

from anchoropt.errors import ConfigError
from anchoropt.features import CachedViewLoader, FeatureBatches, FeatureStore, backbone_identity, cache_key
from anchoropt.features.batches import encode_batches, encode_views, labels_of
from anchoropt.features.identity import image_list_identity, item_paths, precision_identity, transform_identity
from anchoropt.features.store import default_cache_root, format_size
from anchoropt.models.clip_parts import ImageEncoder

TRAIN_VIEWS_KEY = "FEATURE_CACHE.TRAIN_VIEWS"


class FrozenImageFeatures:
    """Mixin for `ClipTrainer` (see the module docstring)."""

    #: True when the image tower is frozen and runs without prompts, so its features can be cached.
    IMAGE_ENCODER_FROZEN = False

    cfg: Any
    device: torch.device
    precision: Any

    # ---- what a trainer provides ----------------------------------------------------------
    def frozen_image_encoder(self) -> ImageEncoder:
        """The model's frozen image encoder (features in, features out; see `ImageEncoder.raw`)."""
        return self.model.image_encoder

    def uses_training_images(self) -> bool:
        """False when training never reads an image (e.g. Stage I without its image term)."""
        return True

    # ---- evaluation -----------------------------------------------------------------------
    def feature_store(self) -> FeatureStore:
        return FeatureStore(self.cfg.FEATURE_CACHE.DIR or default_cache_root())

    def feature_cache_parts(self, loader: Any) -> dict[str, Any]:
        """What the features of `loader`'s images depend on (hashed into the cache key)."""
        encoder = self.frozen_image_encoder()
        backbone = self.cfg.MODEL.BACKBONE
        return {
            "backbone": backbone_identity(backbone.NAME, backbone.PATH, encoder),
            "precision": precision_identity(self.precision, self.device),
            "transform": transform_identity(self.cfg.INPUT, loader.dataset.transform),
            "images": image_list_identity(item_paths(loader.dataset.data_source)),
            "encoder": type(encoder).__qualname__,
        }

    def evaluation_batches(self, split: str, loader: Any) -> Iterable[dict]:
        """The batches an evaluation iterates: `loader` itself, or its images' cached features."""
        if not (self.IMAGE_ENCODER_FROZEN and self.cfg.FEATURE_CACHE.ENABLED):
            return loader
        start = time.time()
        parts = self.feature_cache_parts(loader)
        key = cache_key(parts)
        store = self.feature_store()
        encoder = self.frozen_image_encoder()
        describe = {
            "dataset": self.cfg.DATASET.NAME,
            "split": split,
            "subsample_classes": self.cfg.DATASET.get("SUBSAMPLE_CLASSES", ""),
            "backbone": self.cfg.MODEL.BACKBONE.PATH or self.cfg.MODEL.BACKBONE.NAME,
            "filled_by": self.cfg.TRAINER.NAME,
            "identity": parts,
        }
        features, how, entry = store.get_or_fill(
            key, describe, lambda: encode_batches(encoder.raw, loader, self.device, self.autocast)
        )
        size = format_size(features.numel() * features.element_size())
        what = {
            "hit": f"read from the feature cache (memory-mapped) at {entry.directory if entry else ''}",
            "filled": f"encoded once and stored in the feature cache at {entry.directory if entry else ''}",
            "unwritten": "encoded (the feature cache could not be written)",
        }[how]
        print(
            f"Image features of the {split} set ({features.shape[0]} x {features.shape[1]}, {size}) {what} "
            f"in {time.time() - start:.1f}s"
        )
        return FeatureBatches(features, labels_of(loader.dataset.data_source), loader.batch_size)

    # ---- training -------------------------------------------------------------------------
    def before_train(self) -> None:
        views = int(self.cfg.FEATURE_CACHE.TRAIN_VIEWS)
        if views < 0:
            raise ConfigError(f"{TRAIN_VIEWS_KEY} must be >= 0 (0 = off), got {views}")
        if views > 0:
            if not self.IMAGE_ENCODER_FROZEN:
                raise ConfigError(
                    f"{TRAIN_VIEWS_KEY}={views}: {self.cfg.TRAINER.NAME} trains through its image encoder "
                    "(prompts enter the image tower), so its training images cannot be cached; set it to 0"
                )
            if self.uses_training_images():
                self.use_cached_training_views(views)
        super().before_train()

    def use_cached_training_views(self, num_views: int) -> None:
        """Encode `num_views` augmented views of every training image and train on them (see the module doc)."""
        loader = self.train_loader_x
        encoder = self.frozen_image_encoder()
        start = time.time()
        with torch.no_grad():
            views = encode_views(
                encoder.raw,
                loader.dataset,
                num_views,
                loader.batch_size,
                self.cfg.DATALOADER.NUM_WORKERS,
                self.device,
                self.autocast,
            )
        self.train_loader_x = CachedViewLoader(
            views, labels_of(loader.dataset.data_source), loader.batch_sampler, self.cfg.SEED, lambda: self.epoch
        )
        size = format_size(views.numel() * views.element_size())
        print(
            f"{TRAIN_VIEWS_KEY}={num_views}: {views.shape[1]} training images x {num_views} augmented views encoded "
            f"once ({size}, {time.time() - start:.1f}s); each epoch draws one view per image. This changes the "
            "training distribution (a fresh augmentation per epoch becomes one of K fixed ones)"
        )
