"""Trainer behaviour shared by both engines: checkpoints, resume, non-finite losses.

``TrainerExtensions`` is mixed into the built-in ``TrainerX`` and, in Dassl
mode, placed in front of Dassl's ``TrainerX``. It replaces exactly the pieces
of Dassl that break on current PyTorch or that we must do differently:
checkpoints hold plain values and are written atomically, loading never
unpickles objects, a resume restores the RNG streams (so an interrupted run
ends where an uninterrupted one would, with the same train history), a
checkpoint is kept after every epoch as the resume point, and a non-finite
loss is reported with its epoch and step.
"""

from __future__ import annotations

import datetime
import json
import os
import os.path as osp
import time
import warnings

import torch

from anchoropt.engine.checkpoint import (
    BEST_NAME,
    CheckpointUnreadable,
    capture_rng_state,
    epoch_checkpoints,
    epoch_file_name,
    latest_checkpoint_path,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from anchoropt.engine.meters import AverageMeter, MetricMeter, progress
from anchoropt.errors import CheckpointError, UserError
from anchoropt.fileio import atomic_write_bytes
from anchoropt.runs.identity import run_identity

HISTORY_FILE = "train_history.jsonl"


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite."""


def describe_state_dict_mismatch(model: torch.nn.Module, state_dict: dict) -> str:
    """A readable account of why ``state_dict`` does not fit ``model`` (or '' if it does)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and hasattr(state_dict[k], "shape") and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    parts = []
    if shapes:
        parts.append("shape mismatch " + "; ".join(shapes))
    if missing:
        parts.append(f"missing keys {missing}")
    if unexpected:
        parts.append(f"unexpected keys {unexpected}")
    return ", ".join(parts)


def shots_summary(train_x, num_shots: int) -> dict:
    """Training images per class, with a warning naming the classes that have fewer than ``num_shots``
    (the sampler then takes all they have, so the run is not the K-shot run its settings say)."""
    counts: dict[str, int] = {}
    for item in train_x:
        counts[item.classname] = counts.get(item.classname, 0) + 1
    summary = {"requested": num_shots, "min": min(counts.values(), default=0), "max": max(counts.values(), default=0)}
    if num_shots > 0:
        fewer = {name: n for name, n in counts.items() if n < num_shots}
        if fewer:
            summary["fewer"] = fewer
            listed = ", ".join(f"{name} {n}" for name, n in list(fewer.items())[:10])
            more = f" and {len(fewer) - 10} more" if len(fewer) > 10 else ""
            warnings.warn(
                f"DATASET.NUM_SHOTS is {num_shots} but {len(fewer)} of {len(counts)} classes have fewer training "
                f"images ({listed}{more}); they train on all they have (recorded as 'shots' in results.json)",
                stacklevel=2,
            )
    return summary


class TrainerExtensions:
    """Checkpoint I/O and loss checks; expects Dassl's ``TrainerBase`` attributes."""

    #: Seconds spent by the earlier runs this one resumed (stored in each checkpoint).
    resumed_wall_time_s: float = 0.0

    def total_wall_time_s(self) -> float:
        """Wall time of the whole run, across resumes (from this trainer's creation on)."""
        start = getattr(self, "_created_at", None) or getattr(self, "time_start", None) or time.time()
        return self.resumed_wall_time_s + time.time() - start

    # ---- hooks for subclasses -------------------------------------------------
    def checkpoint_extras(self, name: str) -> dict:
        """Extra plain values stored in the checkpoint of model ``name`` (e.g. class names)."""
        return {}

    def before_checkpoint_load(self, name: str, checkpoint: dict) -> None:
        """Called before the weights of model ``name`` are restored from ``checkpoint`` (e.g. to size a
        class-dependent module, such as a classifier head, to the checkpoint's)."""

    def on_checkpoint_loaded(self, name: str, checkpoint: dict) -> None:
        """Called after the weights of model ``name`` were restored from ``checkpoint``."""

    # ---- data -----------------------------------------------------------------------
    def build_data_loader(self) -> None:
        """Dassl's attributes (loaders, num_classes, lab2cname, dm); images are read by our
        ``DatasetWrapper`` on either engine, so an unreadable file is reported by its path."""
        from anchoropt.engine import DataManager, DatasetWrapper  # the seam imports this module

        dm = DataManager(self.cfg, dataset_wrapper=DatasetWrapper)
        self.train_loader_x = dm.train_loader_x
        self.train_loader_u = dm.train_loader_u
        self.val_loader = dm.val_loader
        self.test_loader = dm.test_loader
        self.num_classes = dm.num_classes
        self.num_source_domains = dm.num_source_domains
        self.lab2cname = dm.lab2cname
        self.dm = dm
        self.shots = shots_summary(dm.dataset.train_x, self.cfg.DATASET.NUM_SHOTS)

    reads_training_images = True  # False for a trainer whose loss needs no images (its epochs skip the loader)

    def splits_read(self, training: bool) -> list[tuple[str, list]]:
        """The splits a run reads images from: what ``train.py`` checks before the first step."""
        ds, test = self.dm.dataset, self.cfg.TEST
        if not training:
            return [("val", ds.val)] if test.SPLIT == "val" and ds.val else [("test", ds.test)]
        splits = [("train", ds.train_x)] if self.reads_training_images else []
        if not test.NO_TEST:
            if test.FINAL_MODEL == "best_val" and ds.val:
                splits.append(("val", ds.val))
            splits.append(("test", ds.test))
        return splits

    # ---- the epoch loop ---------------------------------------------------------
    def epoch_batches(self):
        """What one epoch iterates over, one item per optimizer step (a trainer that needs no images
        may step through ``[None] * len(self.train_loader_x)``, keeping the progress line and history)."""
        return self.train_loader_x

    def run_epoch(self) -> None:
        self.set_model_mode("train")
        losses = MetricMeter()
        batch_time = AverageMeter()
        data_time = AverageMeter()
        batches = self.epoch_batches()
        self.num_batches = len(batches)
        end = time.time()
        for self.batch_idx, batch in enumerate(progress(batches, total=self.num_batches)):
            data_time.update(time.time() - end)
            lr = self._current_lr_or_none()
            loss_summary = self.forward_backward(batch)
            batch_time.update(time.time() - end)
            losses.update(loss_summary)
            self._print_step(losses, batch_time, data_time, lr)
            end = time.time()
        self.record_epoch(losses, batch_time)

    def _print_step(self, losses: MetricMeter, batch_time: AverageMeter, data_time: AverageMeter, lr: float) -> None:
        meet_freq = (self.batch_idx + 1) % self.cfg.TRAIN.PRINT_FREQ == 0
        if not (meet_freq or self.num_batches < self.cfg.TRAIN.PRINT_FREQ):
            return
        nb_remain = self.num_batches - self.batch_idx - 1 + (self.max_epoch - self.epoch - 1) * self.num_batches
        eta = str(datetime.timedelta(seconds=int(batch_time.avg * nb_remain)))
        print(
            " ".join(
                [
                    f"epoch [{self.epoch + 1}/{self.max_epoch}]",
                    f"batch [{self.batch_idx + 1}/{self.num_batches}]",
                    f"time {batch_time.val:.3f} ({batch_time.avg:.3f})",
                    f"data {data_time.val:.3f} ({data_time.avg:.3f})",
                    f"{losses}",
                    f"lr {lr:.4e}" if lr is not None else "",
                    f"eta {eta}",
                ]
            )
        )

    def record_epoch(self, losses: MetricMeter, batch_time: AverageMeter) -> None:
        """Append the epoch's mean losses to ``train_history.jsonl`` (machine-readable, no log scraping)."""
        entry = {
            "epoch": self.epoch + 1,
            "steps": self.num_batches,
            "lr": getattr(self, "_epoch_start_lr", None),
            "seconds": batch_time.sum,
            **{k: m.avg for k, m in losses.meters.items()},
        }
        os.makedirs(self.output_dir, exist_ok=True)
        with open(osp.join(self.output_dir, HISTORY_FILE), "a") as f:
            f.write(json.dumps(entry) + "\n")

    def before_epoch(self) -> None:
        self._epoch_start_lr = self._current_lr_or_none()

    def _current_lr_or_none(self) -> float | None:
        optims = [o for o in self._optims.values() if o is not None]
        return optims[0].param_groups[0]["lr"] if optims else None

    # ---- saving ---------------------------------------------------------------
    def save_model(
        self, epoch: int, directory: str, is_best: bool = False, val_result: float | None = None, model_name: str = ""
    ) -> None:
        rng_state = capture_rng_state()
        fingerprint = run_identity(self.cfg)["fingerprint"]  # which run wrote it (anchoropt.runs.identity)
        for name in self.get_model_names():
            optim, sched = self._optims[name], self._scheds[name]
            state = {
                "state_dict": self._models[name].state_dict(),
                "epoch": epoch + 1,
                "optimizer": optim.state_dict() if optim is not None else None,
                "scheduler": sched.state_dict() if sched is not None else None,
                "val_result": val_result,
                "rng_state": rng_state,
                "wall_time_s": self.total_wall_time_s(),
                "run_fingerprint": fingerprint,
            }
            state.update(self.checkpoint_extras(name))
            save_checkpoint(state, osp.join(directory, name), is_best=is_best, model_name=model_name)

    def _is_kept_epoch(self, epoch: int) -> bool:
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        return epoch == self.max_epoch or (freq > 0 and epoch % freq == 0)

    def after_epoch(self) -> None:
        finished = self.epoch + 1
        if not self.cfg.TEST.NO_TEST and self.cfg.TEST.FINAL_MODEL == "best_val":
            curr_result = self.test(split="val")
            if curr_result > self.best_result:
                self.best_result = curr_result
                self.save_model(self.epoch, self.output_dir, val_result=curr_result, model_name=BEST_NAME)
        # Every epoch leaves a resume point; only the epochs Dassl would keep stay on disk. The one before the
        # latest stays too until training ends: a fallback should the latest be damaged later (a copy cut short).
        self.save_model(self.epoch, self.output_dir)
        stale = [finished - 2] + ([finished - 1] if finished == self.max_epoch else [])
        for epoch in stale:
            if epoch > 0 and not self._is_kept_epoch(epoch):
                for name in self.get_model_names():
                    path = osp.join(self.output_dir, name, epoch_file_name(epoch))
                    if osp.isfile(path):
                        os.remove(path)

    # ---- loading --------------------------------------------------------------
    def _load_into(self, name: str, path: str, checkpoint: dict) -> None:
        self.before_checkpoint_load(name, checkpoint)
        model = self._models[name]
        state_dict = checkpoint["state_dict"]
        problem = describe_state_dict_mismatch(model, state_dict)
        if problem:
            raise CheckpointError(
                f'Checkpoint "{path}" does not fit model "{name}" of trainer {self.cfg.TRAINER.NAME}: {problem}. '
                "Was it trained with a different trainer or different settings (e.g. N_CTX)?"
            )
        model.load_state_dict(state_dict)
        self.on_checkpoint_loaded(name, checkpoint)

    def resume_model_if_exist(self, directory: str) -> int:
        names = self.get_model_names()
        latest = {name: latest_checkpoint_path(osp.join(directory, name)) for name in names}
        if any(p is None for p in latest.values()):
            print("No checkpoint found, train from scratch")
            self.trim_history(0)
            return 0
        print(f"Found checkpoint at {directory} (will resume training)")
        checkpoints = self._readable_resume_point(directory, latest)
        start_epoch = 0
        rng_state = None
        for name, (path, checkpoint) in checkpoints.items():
            print(f'Loading checkpoint from "{path}"')
            self._load_into(name, path, checkpoint)
            if self._optims[name] is not None and checkpoint.get("optimizer") is not None:
                self._optims[name].load_state_dict(checkpoint["optimizer"])
            if self._scheds[name] is not None and checkpoint.get("scheduler") is not None:
                self._scheds[name].load_state_dict(checkpoint["scheduler"])
            start_epoch = checkpoint["epoch"]
            rng_state = checkpoint.get("rng_state") or rng_state
            self.resumed_wall_time_s = float(checkpoint.get("wall_time_s") or 0.0)
        restore_rng_state(rng_state)
        self.trim_history(start_epoch)
        print(f"Previous epoch: {start_epoch}; resumed at epoch {start_epoch + 1} of {self.max_epoch}")
        return start_epoch

    def _readable_resume_point(self, directory: str, latest: dict[str, str]) -> dict[str, tuple[str, dict]]:
        """The checkpoints of the latest epoch every model can be read at: the pointer's, or (with a warning)
        an earlier one kept on disk when the latest is truncated or corrupt."""
        names = list(latest)
        files = {name: epoch_checkpoints(osp.join(directory, name)) for name in names}
        newest = min(max(files[name], default=0) for name in names)
        epochs = sorted((e for e in set.intersection(*(set(f) for f in files.values())) if e <= newest), reverse=True)
        candidates = [{name: latest[name] for name in names}] + [
            {name: files[name][e] for name in names} for e in epochs
        ]
        problems: list[str] = []
        tried: set[tuple[str, ...]] = set()
        for paths in candidates:
            key = tuple(paths.values())
            if key in tried:
                continue
            tried.add(key)
            try:
                loaded = {name: (path, load_checkpoint(path)) for name, path in paths.items()}
            except CheckpointUnreadable as e:
                problems.append(str(e))
                continue
            if problems:
                warnings.warn(
                    f"{problems[0]}; resuming from the earlier checkpoint {next(iter(paths.values()))} instead",
                    stacklevel=2,
                )
            return loaded
        raise CheckpointError(
            f"{problems[0]}; no earlier checkpoint in {directory} can be read either: delete its model folders "
            "to train from scratch"
        )

    def trim_history(self, last_epoch: int) -> None:
        """Keep the history of epochs up to the resume point only.

        A run killed after recording an epoch but before its checkpoint (e.g. during a
        best-val evaluation), or in the middle of a line, would otherwise repeat or garble it.
        """
        path = osp.join(self.output_dir, HISTORY_FILE)
        if not osp.isfile(path):
            return
        kept = []
        with open(path) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(entry, dict) and isinstance(entry.get("epoch"), int) and entry["epoch"] <= last_epoch:
                    kept.append(json.dumps(entry) + "\n")
        atomic_write_bytes(path, "".join(kept).encode())

    def load_model(self, directory: str, epoch: int | None = None) -> None:
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        model_file = BEST_NAME if epoch is None else epoch_file_name(epoch)
        for name in self.get_model_names():
            path = osp.join(directory, name, model_file)
            if not osp.isfile(path):
                folder = osp.join(directory, name)
                found = sorted(f for f in os.listdir(folder) if f.startswith("model")) if osp.isdir(folder) else []
                hint = (
                    f"found {found}; pass --load-epoch N for model.pth.tar-N"
                    if found
                    else "no checkpoint files there; is --model-dir the output directory of a training run?"
                )
                raise CheckpointError(f"No checkpoint at {path} ({hint})")
            checkpoint = load_checkpoint(path)
            self._load_into(name, path, checkpoint)
            val = checkpoint.get("val_result")
            val_txt = f", val_result={val:.1f}" if isinstance(val, (int, float)) else ""
            print(f"Load {path} to {name} (epoch={checkpoint['epoch']}{val_txt})")

    # ---- loss checks ----------------------------------------------------------
    def non_finite_loss_advice(self) -> str:
        """What to change after a NaN/inf loss (``ClipTrainer`` names its PREC key and value)."""
        return "Low precision is the usual cause: rerun with the trainer's PREC set to fp32 (or amp)"

    def detect_anomaly(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss).all():
            epoch = getattr(self, "epoch", 0) + 1
            step = getattr(self, "batch_idx", 0) + 1
            steps = getattr(self, "num_batches", None)
            # after_epoch leaves a resume point for every finished epoch, and nothing is written mid-epoch;
            # in the first epoch after a --resume, that point is still the one resumed from.
            resumed_from = self.cfg.RESUME if epoch - 1 == getattr(self, "start_epoch", 0) else ""
            kept = (
                f"the checkpoint of epoch {epoch - 1} in {resumed_from or self.output_dir} is intact and a rerun "
                "resumes from it"
                if epoch > 1
                else "no epoch had finished, so no checkpoint was written"
            )
            raise NonFiniteLossError(
                f"Loss is {loss.detach().float().flatten()[0].item()} at epoch {epoch}, batch {step}"
                f"{f' of {steps}' if steps else ''}: training stopped; {kept}. {self.non_finite_loss_advice()}"
            )

    def model_backward(self, loss: torch.Tensor) -> None:
        self.detect_anomaly(loss)
        loss.backward()
