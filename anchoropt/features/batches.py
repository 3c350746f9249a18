"""Encoding images once and serving their features in place of image batches.

A batch served here looks like a data loader's (``{"img", "label", "index"}``) except that
``"img"`` holds image features [B, e]; `anchoropt.models.clip_parts.ImageEncoder` passes such
features through, so every model built on it scores them as it scores images.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader

Autocast = Callable[[], ContextManager]


@torch.no_grad()
def encode_batches(
    encode: Callable[[torch.Tensor], torch.Tensor],
    loader: Iterable[dict],
    device: torch.device,
    autocast: Autocast = contextlib.nullcontext,
) -> torch.Tensor:
    """``encode(batch["img"])`` for every batch of `loader`, in order, as one fp32 CPU tensor [N, e]."""
    chunks = []
    for batch in loader:
        with autocast():
            chunks.append(encode(batch["img"].to(device)).float().cpu())
    return torch.cat(chunks)


def labels_of(items: Sequence[Any]) -> torch.Tensor:
    """The labels of Dassl ``Datum`` items, in order."""
    return torch.tensor([int(item.label) for item in items], dtype=torch.long)


class FeatureBatches:
    """Consecutive batches of cached features and their labels: the evaluation loop over a test loader
    (sequential, same batch size), without reading or encoding an image."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, batch_size: int) -> None:
        if features.shape[0] != labels.shape[0]:
            raise ValueError(f"{features.shape[0]} cached features for {labels.shape[0]} images")
        self.features = features
        self.labels = labels
        self.batch_size = int(batch_size)

    def __len__(self) -> int:
        return -(-self.labels.shape[0] // self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        for start in range(0, self.labels.shape[0], self.batch_size):
            stop = min(start + self.batch_size, self.labels.shape[0])
            yield {
                "img": self.features[start:stop],
                "label": self.labels[start:stop],
                "index": torch.arange(start, stop),
            }


def encode_views(
    encode: Callable[[torch.Tensor], torch.Tensor],
    dataset: Any,
    num_views: int,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    autocast: Autocast = contextlib.nullcontext,
) -> torch.Tensor:
    """[K, N, e]: K passes over the training `dataset` (its own augmentation, drawn from the run's random
    streams as its loader would draw them), each image's K augmented views encoded once."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return torch.stack([encode_batches(encode, loader, device, autocast) for _ in range(num_views)])


class CachedViewLoader:
    """The training loader over cached views: the original loader's batch sampler (same order and
    batch sizes), and for each image one of its K views, drawn per epoch from a generator seeded by
    (seed, epoch) so a resumed run draws what an uninterrupted one does."""

    def __init__(
        self, views: torch.Tensor, labels: torch.Tensor, batch_sampler: Iterable, seed: int, epoch: Callable[[], int]
    ) -> None:
        if views.dim() != 3 or views.shape[1] != labels.shape[0]:
            raise ValueError(f"views {tuple(views.shape)} do not match {labels.shape[0]} training images")
        self.views = views
        self.labels = labels
        self.batch_sampler = batch_sampler
        self.seed = int(seed)
        self.epoch = epoch

    @property
    def num_views(self) -> int:
        return int(self.views.shape[0])

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def view_choice(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randint(self.num_views, (self.labels.shape[0],), generator=generator)

    def __iter__(self) -> Iterator[dict]:
        choice = self.view_choice(self.epoch())
        for indices in self.batch_sampler:
            index = torch.as_tensor(list(indices), dtype=torch.long)
            yield {"img": self.views[choice[index], index], "label": self.labels[index], "index": index}
