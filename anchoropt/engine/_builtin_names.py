"""Dassl names served by the built-in core."""

from anchoropt.engine.builtin.config import get_cfg_default
from anchoropt.engine.builtin.data.dataset_base import DatasetBase, Datum
from anchoropt.engine.builtin.data.manager import DataManager, DatasetWrapper, build_data_loader
from anchoropt.engine.builtin.data.transforms import build_transform
from anchoropt.engine.builtin.evaluator import build_evaluator
from anchoropt.engine.builtin.logger import setup_logger
from anchoropt.engine.builtin.optim import build_optimizer
from anchoropt.engine.builtin.registry import DATASET_REGISTRY, EVALUATOR_REGISTRY, TRAINER_REGISTRY
from anchoropt.engine.builtin.tools import (
    check_isfile,
    count_num_param,
    listdir_nohidden,
    mkdir_if_missing,
    read_image,
    read_json,
    set_random_seed,
)
from anchoropt.engine.builtin.trainer import SimpleTrainer, TrainerX, build_trainer

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
