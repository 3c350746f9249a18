"""Samplers selected by ``DATALOADER.*.SAMPLER``."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Iterator, Sequence

from torch.utils.data import RandomSampler, Sampler, SequentialSampler

from anchoropt.errors import ConfigError

AVAILABLE_SAMPLERS = ("RandomSampler", "SequentialSampler", "RandomClassSampler")


class RandomClassSampler(Sampler):
    """Batches of ``batch_size // n_ins`` random classes with ``n_ins`` items each."""

    def __init__(self, data_source: Sequence, batch_size: int, n_ins: int) -> None:
        if batch_size < n_ins:
            raise ConfigError(f"batch_size ({batch_size}) must be at least N_INS ({n_ins}) for RandomClassSampler")
        self.data_source = data_source
        self.batch_size = batch_size
        self.n_ins = n_ins
        self.ncls_per_batch = batch_size // n_ins
        self.index_dic: dict[int, list[int]] = defaultdict(list)
        for index, item in enumerate(data_source):
            self.index_dic[item.label].append(index)
        self.labels = list(self.index_dic.keys())
        if len(self.labels) < self.ncls_per_batch:
            raise ConfigError("RandomClassSampler needs at least batch_size // N_INS classes")
        self.length = len(list(self.__iter__()))

    def __iter__(self) -> Iterator[int]:
        batch_idxs_dict: dict[int, list[list[int]]] = defaultdict(list)
        for label in self.labels:
            idxs = list(self.index_dic[label])
            if len(idxs) < self.n_ins:
                idxs = random.choices(idxs, k=self.n_ins)
            random.shuffle(idxs)
            batch: list[int] = []
            for idx in idxs:
                batch.append(idx)
                if len(batch) == self.n_ins:
                    batch_idxs_dict[label].append(batch)
                    batch = []
        avai_labels = list(self.labels)
        final: list[int] = []
        while len(avai_labels) >= self.ncls_per_batch:
            for label in random.sample(avai_labels, self.ncls_per_batch):
                final.extend(batch_idxs_dict[label].pop(0))
                if not batch_idxs_dict[label]:
                    avai_labels.remove(label)
        return iter(final)

    def __len__(self) -> int:
        return self.length


def build_sampler(
    sampler_type: str, cfg=None, data_source=None, batch_size: int = 32, n_domain: int = 0, n_ins: int = 16
) -> Sampler:
    if sampler_type == "RandomSampler":
        return RandomSampler(data_source)
    if sampler_type == "SequentialSampler":
        return SequentialSampler(data_source)
    if sampler_type == "RandomClassSampler":
        return RandomClassSampler(data_source, batch_size, n_ins)
    raise ConfigError(
        f"Unknown sampler {sampler_type!r}; the built-in engine provides {list(AVAILABLE_SAMPLERS)} "
        "(domain samplers need the real Dassl package)"
    )
