"""Dassl names served by the real ``dassl`` package, with the pieces that break on current PyTorch replaced.

Dassl's files are not patched: its LR warm-up scheduler is never built (ours is
exported under the same name), its trainer gets ``TrainerExtensions`` in front,
which takes over checkpoint save / load / resume, and the stdout logger is ours.
"""

import dassl
from dassl.config import get_cfg_default
from dassl.data import DataManager
from dassl.data.data_manager import build_data_loader
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase
from dassl.data.datasets import Datum as _DasslDatum
from dassl.data.transforms import build_transform
from dassl.engine import TRAINER_REGISTRY, build_trainer
from dassl.engine import SimpleTrainer as _DasslSimpleTrainer
from dassl.engine import TrainerX as _DasslTrainerX
from dassl.evaluation import EVALUATOR_REGISTRY, build_evaluator
from dassl.optim import build_optimizer
from dassl.utils import (
    check_isfile,
    count_num_param,
    listdir_nohidden,
    mkdir_if_missing,
    read_image,
    read_json,
    set_random_seed,
)

from anchoropt.engine.builtin.data.dataset_base import Datum as _BuiltinDatum
from anchoropt.engine.builtin.data.manager import DatasetWrapper

# Dassl's Logger closes the real stdout when it is garbage-collected; ours only closes its file.
from anchoropt.engine.builtin.logger import setup_logger
from anchoropt.engine.trainer_extensions import TrainerExtensions


class Datum(_DasslDatum):
    """Dassl's ``Datum`` without the per-file ``stat`` (1.2 M of them for ImageNet)."""

    __init__ = _BuiltinDatum.__init__


class SimpleTrainer(TrainerExtensions, _DasslSimpleTrainer):
    pass


class TrainerX(TrainerExtensions, _DasslTrainerX):
    pass


DASSL_VERSION = getattr(dassl, "__version__", "unknown version")

__all__ = [
    "get_cfg_default",
    "DatasetBase",
    "Datum",
    "DataManager",
    "DatasetWrapper",
    "build_data_loader",
    "build_transform",
    "build_evaluator",
    "setup_logger",
    "build_optimizer",
    "DATASET_REGISTRY",
    "EVALUATOR_REGISTRY",
    "TRAINER_REGISTRY",
    "check_isfile",
    "count_num_param",
    "listdir_nohidden",
    "mkdir_if_missing",
    "read_image",
    "read_json",
    "set_random_seed",
    "SimpleTrainer",
    "TrainerX",
    "build_trainer",
]
