"""``Classification`` evaluator: accuracy, error rate, macro-F1, per-class accuracy.

Prints its summary in Dassl's format (downstream log parsers keep working) and
returns full-precision values, which the trainers write to a results file.
"""

from __future__ import annotations

import os.path as osp
from collections import OrderedDict, defaultdict
from typing import Any

import numpy as np
import torch

from .registry import EVALUATOR_REGISTRY


def macro_f1_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro F1 over the labels present in ``y_true`` (sklearn's ``labels=np.unique(y_true)``)."""
    labels = np.unique(y_true)
    scores = []
    for label in labels:
        tp = np.sum((y_pred == label) & (y_true == label))
        fp = np.sum((y_pred == label) & (y_true != label))
        fn = np.sum((y_pred != label) & (y_true == label))
        denom = 2 * tp + fp + fn
        scores.append(0.0 if denom == 0 else 2 * tp / denom)
    return float(np.mean(scores)) if scores else 0.0


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Row-normalised confusion matrix over the labels seen in either array."""
    labels = np.unique(np.concatenate([y_true, y_pred]))
    index = {label: i for i, label in enumerate(labels)}
    cmat = np.zeros((len(labels), len(labels)), dtype=np.float64)
    for t, p in zip(y_true, y_pred):
        cmat[index[t], index[p]] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        cmat = np.nan_to_num(cmat / cmat.sum(axis=1, keepdims=True))
    return cmat


class EvaluatorBase:
    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def reset(self) -> None:
        raise NotImplementedError

    def process(self, mo: torch.Tensor, gt: torch.Tensor) -> None:
        raise NotImplementedError

    def evaluate(self) -> "OrderedDict[str, float]":
        raise NotImplementedError


@EVALUATOR_REGISTRY.register()
class Classification(EvaluatorBase):
    def __init__(self, cfg: Any, lab2cname: dict | None = None, **kwargs: Any) -> None:
        super().__init__(cfg)
        self._lab2cname = lab2cname
        self._per_class = cfg.TEST.PER_CLASS_RESULT
        if self._per_class and lab2cname is None:
            raise ValueError("TEST.PER_CLASS_RESULT needs lab2cname")
        self.reset()

    def reset(self) -> None:
        self._correct = 0
        self._total = 0
        self._y_true: list[int] = []
        self._y_pred: list[int] = []
        self._per_class_res: dict[int, list[int]] | None = defaultdict(list) if self._per_class else None

    def process(self, mo: torch.Tensor, gt: torch.Tensor) -> None:
        pred = mo.max(1)[1]
        matches = pred.eq(gt)
        self._correct += int(matches.sum().item())
        self._total += gt.shape[0]
        gt_list = gt.detach().cpu().tolist()
        self._y_true.extend(gt_list)
        self._y_pred.extend(pred.detach().cpu().tolist())
        if self._per_class_res is not None:
            for label, ok in zip(gt_list, matches.cpu().tolist()):
                self._per_class_res[label].append(int(ok))

    def evaluate(self) -> "OrderedDict[str, float]":
        if self._total == 0:
            raise RuntimeError("The evaluator received no samples: the evaluation split is empty")
        results: "OrderedDict[str, float]" = OrderedDict()
        acc = 100.0 * self._correct / self._total
        err = 100.0 - acc
        y_true, y_pred = np.asarray(self._y_true), np.asarray(self._y_pred)
        macro_f1 = 100.0 * macro_f1_score(y_true, y_pred)
        results["accuracy"] = acc
        results["error_rate"] = err
        results["macro_f1"] = macro_f1
        print(
            "=> result\n"
            f"* total: {self._total:,}\n"
            f"* correct: {self._correct:,}\n"
            f"* accuracy: {acc:.1f}%\n"
            f"* error: {err:.1f}%\n"
            f"* macro_f1: {macro_f1:.1f}%"
        )
        if self._per_class_res is not None:
            print("=> per-class result")
            accs = []
            for label in sorted(self._per_class_res):
                res = self._per_class_res[label]
                class_acc = 100.0 * sum(res) / len(res)
                accs.append(class_acc)
                print(
                    f"* class: {label} ({self._lab2cname[label]})\t"
                    f"total: {len(res):,}\tcorrect: {sum(res):,}\tacc: {class_acc:.1f}%"
                )
            mean_acc = float(np.mean(accs))
            print(f"* average: {mean_acc:.1f}%")
            results["perclass_accuracy"] = mean_acc
        if self.cfg.TEST.COMPUTE_CMAT:
            save_path = osp.join(self.cfg.OUTPUT_DIR, "cmat.pt")
            torch.save(torch.from_numpy(confusion_matrix(y_true, y_pred)), save_path)
            print(f"Confusion matrix is saved to {save_path}")
        return results


def build_evaluator(cfg: Any, **kwargs: Any) -> EvaluatorBase:
    name = cfg.TEST.EVALUATOR
    if cfg.VERBOSE:
        print(f"Loading evaluator: {name}")
    return EVALUATOR_REGISTRY.get(name)(cfg, **kwargs)
