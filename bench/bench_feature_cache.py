"""Frozen image features: the second evaluation of a test set against the first, and a training epoch on
K cached views against one over images. Both through the real trainer (CoOp + AnchorOPT), in one run.

    PYTHONPATH=. python -m bench.bench_feature_cache            # 1000 test images x 100 classes; 50 classes x 16 shots
    PYTHONPATH=. python -m bench.bench_feature_cache --quick    # a smoke run with small cases

Setup (not timed): a random CLIP of the given architecture saved to a weights file and loaded through
``MODEL.BACKBONE.PATH`` as a user's would be; a generated Caltech101 layout (noise JPEGs) with its split
file; a stand-in Stage I anchor; the published CoOp + AnchorOPT settings (configs/trainers/CoOp_AnchorOPT/
vit_b16.yaml + base2new/caltech101.yaml) in fp32 with ``DATALOADER.NUM_WORKERS 0``.

- **Evaluation**: ``trainer.test()`` twice over the same test set (all classes: both text branches).
  The first encodes every image and stores the features; the second reads them (memory-mapped) and
  computes the cache key as a new job would: the weights file is hashed again and every image stat-ed.
- **Training epoch** (base classes, 16 shots, batch 32): ``run_epoch`` of a trainer reading images, and
  of one with ``FEATURE_CACHE.TRAIN_VIEWS K``, whose one-off encoding of the K views is reported apart.
  ``--max-steps`` times only the first steps of each epoch and scales to the epoch's step count (every
  step does the same work), as bench/README.md describes for the other benchmarks.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from typing import Any

import numpy as np
import torch
from PIL import Image

from anchoropt.backbone.random_clip import build_random_clip, save_clip_state_dict
from anchoropt.features import identity
from anchoropt.method.anchor_checkpoint import save_anchor
from bench.common import machine_description

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
CONFIGS = ("configs/trainers/CoOp_AnchorOPT/vit_b16.yaml", "configs/trainers/CoOp_AnchorOPT/base2new/caltech101.yaml")
EVAL_TARGET = 20.0
EPOCH_TARGET = 3.0


def write_caltech_layout(root: str, classes: int, per_split: dict[str, int], size: int, seed: int) -> None:
    """``caltech-101/101_ObjectCategories/<class>/<image>.jpg`` (noise) and ``split_zhou_Caltech101.json``."""
    gen = np.random.default_rng(seed)
    dataset_dir = os.path.join(root, "caltech-101")
    rows: dict[str, list] = {split: [] for split in per_split}
    for label in range(classes):
        folder = f"category_{label:03d}"
        os.makedirs(os.path.join(dataset_dir, "101_ObjectCategories", folder), exist_ok=True)
        index = 0
        for split, count in per_split.items():
            for _ in range(count):
                rel = f"{folder}/image_{index:04d}.jpg"
                pixels = gen.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(dataset_dir, "101_ObjectCategories", rel), quality=90)
                rows[split].append([rel, label, f"category {label:03d}"])
                index += 1
    with open(os.path.join(dataset_dir, "split_zhou_Caltech101.json"), "w") as handle:
        json.dump(rows, handle)


def trainer_for(work: str, args: argparse.Namespace, out: str, *opts: str):
    import anchoropt.datasets  # noqa: F401  (registers the datasets)
    import trainers  # noqa: F401  (registers the trainers and their config nodes)
    from anchoropt.config import build_config
    from anchoropt.engine import build_trainer, set_random_seed

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = build_config(
        os.path.join(repo, "configs/datasets/caltech101.yaml"),
        [os.path.join(repo, path) for path in CONFIGS],
        [
            "DATASET.ROOT", os.path.join(work, "data"),
            "OUTPUT_DIR", os.path.join(work, out),
            "SEED", "1",
            "MODEL.BACKBONE.PATH", os.path.join(work, "weights.pt"),
            "TRAINER.NAME", "CoOp_AnchorOPT",
            "TRAINER.COOP.PREC", "fp32",
            "TRAINER.ANCHOROPT.ANCHOR_PATH", os.path.join(work, "anchor.pth"),
            "DATALOADER.NUM_WORKERS", "0",
            "DATASET.NUM_SHOTS", str(args.shots),
            "FEATURE_CACHE.DIR", os.path.join(work, "feature_cache"),
            "TRAIN.PRINT_FREQ", "1000",
            "INPUT.SIZE", f"({args.resolution}, {args.resolution})",
            *opts,
        ],
    )  # fmt: skip
    set_random_seed(cfg.SEED)
    return build_trainer(cfg)


def timed(fn) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def measure_evaluation(work: str, args: argparse.Namespace) -> dict[str, Any]:
    trainer = trainer_for(work, args, "eval", "DATASET.SUBSAMPLE_CLASSES", "all")
    images = len(trainer.test_loader.dataset)
    first_s, first_cpu, first_acc = timed(trainer.test)
    identity._FILE_HASHES.clear()  # the second evaluation hashes the weights again, as a new job would
    second_s, second_cpu, second_acc = timed(trainer.test)
    assert first_acc == second_acc, "the cached evaluation changed the result"
    entry = trainer.feature_store().entries()[0]
    return {
        "images": images,
        "classes": trainer.num_classes,
        "batch_size": trainer.test_loader.batch_size,
        "first_s": first_s,
        "first_cpu_s": first_cpu,
        "second_s": second_s,
        "second_cpu_s": second_cpu,
        "ratio": first_s / second_s,
        "cpu_ratio": first_cpu / second_cpu,
        "cache_bytes": entry.size_bytes,
        "accuracy": first_acc,
    }


def epoch_time(trainer, max_steps: int | None) -> dict[str, float]:
    """``before_train`` (wall s) and one epoch (wall and CPU s, scaled from its first `max_steps` steps)."""
    setup_s, _, _ = timed(trainer.before_train)
    trainer.before_epoch()
    steps = len(trainer.train_loader_x)
    limit = min(steps, max_steps or steps)
    trainer.set_model_mode("train")
    trainer.num_batches = steps
    batches = iter(trainer.train_loader_x)

    def run_steps() -> None:
        for trainer.batch_idx in range(limit):
            trainer.forward_backward(next(batches))

    wall, cpu, _ = timed(run_steps)
    return {"setup_s": setup_s, "epoch_s": wall * steps / limit, "epoch_cpu_s": cpu * steps / limit, "steps": steps}


def measure_training(work: str, args: argparse.Namespace) -> dict[str, Any]:
    base = ("DATASET.SUBSAMPLE_CLASSES", "base", "TEST.NO_TEST", "True")
    plain = trainer_for(work, args, "train_images", *base)
    train_images = len(plain.train_loader_x.dataset)
    images = epoch_time(plain, args.max_steps)
    cached = trainer_for(work, args, "train_views", *base, "FEATURE_CACHE.TRAIN_VIEWS", str(args.views))
    views = epoch_time(cached, args.max_steps)
    return {
        "classes": plain.num_classes,
        "train_images": train_images,
        "steps": images["steps"],
        "steps_timed": min(images["steps"], args.max_steps or images["steps"]),
        "views": args.views,
        "images_epoch_s": images["epoch_s"],
        "images_epoch_cpu_s": images["epoch_cpu_s"],
        "views_epoch_s": views["epoch_s"],
        "views_epoch_cpu_s": views["epoch_cpu_s"],
        "views_encoding_s": views["setup_s"] - images["setup_s"],
        "ratio": images["epoch_s"] / views["epoch_s"],
        "cpu_ratio": images["epoch_cpu_s"] / views["epoch_cpu_s"],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small cases: a smoke run")
    p.add_argument("--spec", default="ViT-B/16", help="CLIP architecture (random weights)")
    p.add_argument(
        "--classes", dest="eval_classes", type=int, help="classes (default 100; quick 20); training uses half"
    )
    p.add_argument("--eval-per-class", type=int, help="test images per class (default 10; quick 5)")
    p.add_argument("--shots", type=int, help="training images per class (default 16; quick 2)")
    p.add_argument("--views", type=int, default=2, help="K cached views per training image")
    p.add_argument("--max-steps", type=int, help="time this many steps per epoch and scale (default: all)")
    p.add_argument("--image-size", type=int, default=64, help="side of the generated JPEGs")
    p.add_argument("--only", choices=("eval", "train"), help="run one of the two")
    p.add_argument("--output", help="JSON file (default bench/results/features-<quick|full>-<time>.json)")
    args = p.parse_args(argv)
    args.eval_classes = args.eval_classes or (20 if args.quick else 100)
    args.eval_per_class = args.eval_per_class or (5 if args.quick else 10)
    args.shots = args.shots or (2 if args.quick else 16)
    return args


def table(report: dict[str, Any]) -> str:
    lines = [
        "| case | without cache | with cache | speed-up | speed-up (CPU time) | target |",
        "|---|---|---|---|---|---|",
    ]
    ev = report.get("eval")
    if ev:
        met = "met" if ev["ratio"] >= EVAL_TARGET else "MISSED"
        lines.append(
            f"| evaluation, {ev['classes']} classes, {ev['images']} images (batch {ev['batch_size']}): second vs first "
            f"| {ev['first_s']:.1f} s | {ev['second_s']:.2f} s | **{ev['ratio']:.1f}×** | {ev['cpu_ratio']:.1f}× "
            f"| ≥ {EVAL_TARGET:g}×: {met} |"
        )
    tr = report.get("train")
    if tr:
        met = "met" if tr["ratio"] >= EPOCH_TARGET else "MISSED"
        lines.append(
            f"| CoOp + AnchorOPT training epoch, {tr['classes']} classes, {tr['steps']} steps of batch 32, "
            f"K = {tr['views']} views | {tr['images_epoch_s']:.1f} s | {tr['views_epoch_s']:.1f} s "
            f"(+ {tr['views_encoding_s']:.0f} s once) | **{tr['ratio']:.1f}×** | {tr['cpu_ratio']:.1f}× "
            f"| ≥ {EPOCH_TARGET:g}×: {met} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    output = args.output or os.path.join(RESULTS_DIR, f"features-{'quick' if args.quick else 'full'}-{stamp}.json")
    report: dict[str, Any] = {"command": "python -m bench.bench_feature_cache " + " ".join(argv or [])}
    report["options"] = vars(args)
    report["machine"] = machine_description(torch.device("cpu"))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="anchoropt-bench-features-") as work:
        clip_model = build_random_clip(args.spec, seed=0)
        save_clip_state_dict(clip_model, os.path.join(work, "weights.pt"))
        width = clip_model.token_embedding.weight.shape[1]
        args.resolution = int(clip_model.visual.input_resolution)
        save_anchor(os.path.join(work, "anchor.pth"), 0.02 * torch.randn(1, width), [], {})
        del clip_model
        # Evaluation over all classes; training on the base half (50 of 100 by default).
        per_split = {"train": args.shots, "val": 1, "test": args.eval_per_class}
        write_caltech_layout(os.path.join(work, "data"), args.eval_classes, per_split, args.image_size, seed=0)
        if args.only in (None, "eval"):
            report["eval"] = measure_evaluation(work, args)
            print(json.dumps(report["eval"], indent=1), flush=True)
        if args.only in (None, "train"):
            report["train"] = measure_training(work, args)
            print(json.dumps(report["train"], indent=1), flush=True)
    report["duration_s"] = time.perf_counter() - start
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as handle:
        json.dump(report, handle, indent=1)
    print()
    print(table(report))
    print(f"\n{report['duration_s'] / 60:.1f} min; results: {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
