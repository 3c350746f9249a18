"""``DataManager``: dataset from the registry, transforms, samplers, loaders."""

from __future__ import annotations

from typing import Any

import torch
import torchvision.transforms as T
from tabulate import tabulate
from torch.utils.data import DataLoader, Dataset

from anchoropt.engine.builtin.registry import DATASET_REGISTRY
from anchoropt.engine.builtin.tools import read_image
from anchoropt.errors import DataError

from .samplers import build_sampler
from .transforms import INTERPOLATION_MODES, build_transform


def build_dataset(cfg: Any):
    if cfg.VERBOSE:
        print(f"Loading dataset: {cfg.DATASET.NAME}")
    return DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)


class DatasetWrapper(Dataset):
    """Reads and transforms one ``Datum``; an unreadable image is a ``DataError`` naming the file."""

    def __init__(self, cfg: Any, data_source, transform=None, is_train: bool = False) -> None:
        self.cfg = cfg
        self.data_source = data_source
        self.transform = transform
        self.is_train = is_train
        self.k_tfm = cfg.DATALOADER.K_TRANSFORMS if is_train else 1
        self.return_img0 = cfg.DATALOADER.RETURN_IMG0
        if self.k_tfm > 1 and transform is None:
            raise ValueError(f"Cannot augment the image {self.k_tfm} times because transform is None")
        to_tensor = [T.Resize(cfg.INPUT.SIZE, interpolation=INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]), T.ToTensor()]
        if "normalize" in cfg.INPUT.TRANSFORMS:
            to_tensor.append(T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD))
        self.to_tensor = T.Compose(to_tensor)

    def __len__(self) -> int:
        return len(self.data_source)

    def __getitem__(self, idx: int) -> dict:
        item = self.data_source[idx]
        output = {"label": item.label, "domain": item.domain, "impath": item.impath, "index": idx}
        img0 = load_image(item.impath)
        if self.transform is None:
            output["img"] = img0
        elif isinstance(self.transform, (list, tuple)):
            for i, tfm in enumerate(self.transform):
                output["img" if i == 0 else f"img{i + 1}"] = self._transform_image(tfm, img0)
        else:
            output["img"] = self._transform_image(self.transform, img0)
        if self.return_img0:
            output["img0"] = self.to_tensor(img0)
        return output

    def _transform_image(self, tfm, img0):
        imgs = [tfm(img0) for _ in range(self.k_tfm)]
        return imgs[0] if len(imgs) == 1 else imgs


def load_image(path: str):
    """Open an image as RGB, or raise a ``DataError`` that names the file."""
    try:
        return read_image(path)
    except FileNotFoundError:
        raise DataError(f"Image file not found: {path}") from None
    except Exception as e:  # PIL raises several types for corrupt files
        raise DataError(f"Cannot decode image {path}: {type(e).__name__}: {e}") from None


def build_data_loader(
    cfg: Any,
    sampler_type: str = "SequentialSampler",
    data_source=None,
    batch_size: int = 64,
    n_domain: int = 0,
    n_ins: int = 2,
    tfm=None,
    is_train: bool = True,
    dataset_wrapper=None,
) -> DataLoader:
    if not data_source:
        raise DataError(f"Cannot build a data loader: the {'training' if is_train else 'evaluation'} split is empty")
    sampler = build_sampler(
        sampler_type, cfg=cfg, data_source=data_source, batch_size=batch_size, n_domain=n_domain, n_ins=n_ins
    )
    wrapper = dataset_wrapper or DatasetWrapper
    return DataLoader(
        wrapper(cfg, data_source, transform=tfm, is_train=is_train),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        drop_last=is_train and len(data_source) >= batch_size,
        pin_memory=torch.cuda.is_available() and cfg.USE_CUDA,
    )


class DataManager:
    def __init__(self, cfg: Any, custom_tfm_train=None, custom_tfm_test=None, dataset_wrapper=None) -> None:
        dataset = build_dataset(cfg)
        tfm_train = build_transform(cfg, is_train=True) if custom_tfm_train is None else custom_tfm_train
        tfm_test = build_transform(cfg, is_train=False) if custom_tfm_test is None else custom_tfm_test
        x = cfg.DATALOADER.TRAIN_X
        self.train_loader_x = build_data_loader(
            cfg,
            sampler_type=x.SAMPLER,
            data_source=dataset.train_x,
            batch_size=x.BATCH_SIZE,
            n_domain=x.N_DOMAIN,
            n_ins=x.N_INS,
            tfm=tfm_train,
            is_train=True,
            dataset_wrapper=dataset_wrapper,
        )
        self.train_loader_u = None
        if dataset.train_u:
            u = x if cfg.DATALOADER.TRAIN_U.SAME_AS_X else cfg.DATALOADER.TRAIN_U
            self.train_loader_u = build_data_loader(
                cfg,
                sampler_type=u.SAMPLER,
                data_source=dataset.train_u,
                batch_size=u.BATCH_SIZE,
                n_domain=u.N_DOMAIN,
                n_ins=u.N_INS,
                tfm=tfm_train,
                is_train=True,
                dataset_wrapper=dataset_wrapper,
            )
        test_cfg = cfg.DATALOADER.TEST
        self.val_loader = None
        if dataset.val:
            self.val_loader = build_data_loader(
                cfg,
                sampler_type=test_cfg.SAMPLER,
                data_source=dataset.val,
                batch_size=test_cfg.BATCH_SIZE,
                tfm=tfm_test,
                is_train=False,
                dataset_wrapper=dataset_wrapper,
            )
        self.test_loader = build_data_loader(
            cfg,
            sampler_type=test_cfg.SAMPLER,
            data_source=dataset.test,
            batch_size=test_cfg.BATCH_SIZE,
            tfm=tfm_test,
            is_train=False,
            dataset_wrapper=dataset_wrapper,
        )
        self._num_classes = dataset.num_classes
        self._num_source_domains = len(cfg.DATASET.SOURCE_DOMAINS)
        self._lab2cname = dataset.lab2cname
        self.dataset = dataset
        if cfg.VERBOSE:
            self.show_dataset_summary(cfg)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def num_source_domains(self) -> int:
        return self._num_source_domains

    @property
    def lab2cname(self) -> dict[int, str]:
        return self._lab2cname

    def show_dataset_summary(self, cfg: Any) -> None:
        table = [["Dataset", cfg.DATASET.NAME]]
        if cfg.DATASET.SOURCE_DOMAINS:
            table.append(["Source", cfg.DATASET.SOURCE_DOMAINS])
        if cfg.DATASET.TARGET_DOMAINS:
            table.append(["Target", cfg.DATASET.TARGET_DOMAINS])
        table.append(["# classes", f"{self.num_classes:,}"])
        table.append(["# train_x", f"{len(self.dataset.train_x):,}"])
        if self.dataset.train_u:
            table.append(["# train_u", f"{len(self.dataset.train_u):,}"])
        if self.dataset.val:
            table.append(["# val", f"{len(self.dataset.val):,}"])
        table.append(["# test", f"{len(self.dataset.test):,}"])
        print(tabulate(table))
