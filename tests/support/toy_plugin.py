"""A toy dataset and a toy trainer that exercise the engine without CLIP.

``ToyColors``: small generated images whose class is their dominant colour.
``ToyLinear``: a linear classifier on pixels, written exactly like a Dassl
trainer (``build_model`` / ``forward_backward`` / LR stepped after the last
batch of an epoch). It records the LR used at every step and the final test
metrics in JSON files, and can kill itself mid-epoch to simulate a crash.
"""

from __future__ import annotations

import json
import os
import os.path as osp
import signal

import numpy as np
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from yacs.config import CfgNode as CN

from anchoropt.config import register_config_node
from anchoropt.engine import (
    DATASET_REGISTRY,
    TRAINER_REGISTRY,
    DatasetBase,
    Datum,
    TrainerX,
    build_lr_scheduler,
    build_optimizer,
    listdir_nohidden,
    write_json,
)

COLORS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200), "yellow": (200, 200, 30)}
CRASH_ENV = "TOY_CRASH_AT"  # "epoch,batch" (1-based): SIGKILL the process before that step


def write_toy_colors(root: str, n_train: int = 8, n_test: int = 6, size: int = 8, seed: int = 0) -> str:
    """Write ``root/toy_colors/{train,test}/<class>/<i>.png``; return the dataset folder."""
    rng = np.random.default_rng(seed)
    base = osp.join(root, "toy_colors")
    for split, n in (("train", n_train), ("test", n_test)):
        for cname, rgb in COLORS.items():
            folder = osp.join(base, split, cname)
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                noise = rng.integers(-60, 60, size=(size, size, 3))
                arr = np.clip(np.array(rgb)[None, None, :] + noise, 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(osp.join(folder, f"{i}.png"))
    return base


@DATASET_REGISTRY.register()
class ToyColors(DatasetBase):
    dataset_dir = "toy_colors"

    def __init__(self, cfg) -> None:
        base = osp.join(cfg.DATASET.ROOT, self.dataset_dir)
        splits = {}
        for split in ("train", "test"):
            items = []
            for label, cname in enumerate(sorted(listdir_nohidden(osp.join(base, split)))):
                for f in sorted(listdir_nohidden(osp.join(base, split, cname))):
                    items.append(Datum(impath=osp.join(base, split, cname, f), label=label, classname=cname))
            splits[split] = items
        train = self.generate_fewshot_dataset(splits["train"], num_shots=cfg.DATASET.NUM_SHOTS)
        super().__init__(train_x=train, val=splits["test"], test=splits["test"])


@register_config_node
def add_toy_config(cfg) -> None:
    cfg.TRAINER.TOY = CN()
    cfg.TRAINER.TOY.HIDDEN = 0


@TRAINER_REGISTRY.register()
class ToyLinear(TrainerX):
    def build_model(self) -> None:
        size = self.cfg.INPUT.SIZE
        self.model = nn.Linear(3 * size[0] * size[1], self.num_classes).to(self.device)
        self.optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("model", self.model, self.optim, self.sched)
        self.trace_path = osp.join(self.cfg.OUTPUT_DIR, "lr_trace.jsonl")
        crash = os.environ.get(CRASH_ENV, "")
        self.crash_at = tuple(int(v) for v in crash.split(",")) if crash else None

    def forward_backward(self, batch):
        if self.crash_at == (self.epoch + 1, self.batch_idx + 1):
            os.kill(os.getpid(), signal.SIGKILL)
        image, label, _ = self.parse_batch_train(batch)
        output = self.model(image.flatten(1))
        loss = F.cross_entropy(output, label)
        with open(self.trace_path, "a") as f:
            f.write(
                json.dumps(
                    {"epoch": self.epoch, "batch": self.batch_idx, "lr": self.get_current_lr(), "loss": loss.item()}
                )
                + "\n"
            )
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), "acc": (output.argmax(1) == label).float().mean().item() * 100}

    def model_inference(self, input):
        return self.model(input.flatten(1))

    def test(self, split=None):
        accuracy = super().test(split)
        write_json(
            {"accuracy": accuracy, "split": split or self.cfg.TEST.SPLIT},
            osp.join(self.cfg.OUTPUT_DIR, "toy_result.json"),
        )
        return accuracy
