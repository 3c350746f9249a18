"""Frozen image features: an on-disk cache of test-set features per backbone, and cached training views.

`identity` says what a feature depends on (weights, precision, transform, image list) and hashes it
into a key; `store` keeps entries by key on disk (atomic, concurrent-safe, memory-mapped);
`batches` encodes images once and serves their features in place of image batches. The trainer
side (which trainers may use it, the evaluation and training hooks) is ``trainers/frozen_features.py``.
"""

from anchoropt.features.batches import CachedViewLoader, FeatureBatches, encode_batches, encode_views
from anchoropt.features.identity import backbone_identity, cache_key
from anchoropt.features.store import CacheEntry, FeatureStore, default_cache_root

__all__ = [
    "CacheEntry",
    "CachedViewLoader",
    "FeatureBatches",
    "FeatureStore",
    "backbone_identity",
    "cache_key",
    "default_cache_root",
    "encode_batches",
    "encode_views",
]
