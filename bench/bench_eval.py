"""A full evaluation pass of CoOp + AnchorOPT over N test images of unseen classes: ours vs the reference.

Case: ``{"num_classes": C, "num_images": N, "batch_size": B}``. Unseen classes are scored with
the ensemble of both branches, so both paths need both text branches (the least favourable
case for us: on trained classes ours skips the anchor branch entirely).

A pass is ``setup + ceil(N / B) x batch``: ours encodes the class prompts once
(`before_evaluation`) and then scores each batch (`model_inference`); the reference re-encodes
both branches for every batch and has no setup. The setup and the batch step are each timed
over repetitions (median), and the pass time is composed from them: running hundreds of
reference batches on a CPU would take hours, and every batch of a pass does the same work.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from bench.common import PeakMemory, RunOptions, Timing, case_main, random_images, synthetic_classnames, time_repeated
from bench.ours_paths import StageIIHarness
from bench.reference_paths import ReferenceStageII
from bench.setups import build_stage2, load_random_clip

MODULE = "bench.bench_eval"


def cases(quick: bool = False) -> list[dict[str, Any]]:
    """CoOp's test batch size (100); N = 1000 test images (the size of a typical new-class test split)."""
    if quick:
        return [{"num_classes": 50, "num_images": 64, "batch_size": 16}]
    return [{"num_classes": classes, "num_images": 1000, "batch_size": 100} for classes in (100, 1000)]


def case_label(case: dict) -> str:
    return f"eval pass, {case['num_classes']} classes, {case['num_images']} images (batch {case['batch_size']})"


def num_batches(case: dict) -> int:
    return math.ceil(case["num_images"] / case["batch_size"])


def prepare(
    case: dict, path: str, opts: RunOptions
) -> tuple[Callable[[], None] | None, Callable[[], torch.Tensor], int]:
    """(per-evaluation setup or None, one test batch returning its logits, text positions run) for `path`."""
    device = opts.torch_device
    clip_model, precision = load_random_clip(opts.spec, device, opts.precision_name, opts.seed)
    classnames = synthetic_classnames(case["num_classes"], opts.seed)
    setup = build_stage2(clip_model, "coop", classnames, opts.seed)
    images = random_images(case["batch_size"], clip_model.visual.input_resolution, opts.seed)
    if path == "ours":
        harness = StageIIHarness(setup, precision, trained_classnames=[])  # every class unseen
        positions = max(setup.learner.layout.length, setup.learner.anchor_layout.length)
        return harness.evaluation_setup, (lambda: harness.evaluation_batch(images)), positions
    reference = ReferenceStageII(setup, clip_model, precision)
    return None, (lambda: reference.evaluation_batch(images)), clip_model.context_length


def measure(case: dict, path: str, opts: RunOptions) -> dict:
    device = opts.torch_device
    setup_fn, batch_fn, text_positions = prepare(case, path, opts)
    memory = PeakMemory(device)
    memory.reset()
    setup_timing = Timing(wall=[0.0], cpu=[0.0]) if setup_fn is None else time_repeated(setup_fn, device, opts)
    batch_timing = time_repeated(batch_fn, device, opts)
    batches = num_batches(case)
    pass_s = setup_timing.median + batches * batch_timing.median
    pass_cpu_s = setup_timing.cpu_median + batches * batch_timing.cpu_median
    return {
        "case": case,
        "path": path,
        "median_s": pass_s,
        "cpu_median_s": pass_cpu_s,
        "setup": setup_timing.record(),
        "batch": batch_timing.record(),
        "num_batches": batches,
        "reps": min(len(batch_timing.wall), len(setup_timing.wall)),
        "text_positions": text_positions,
        "peak_memory_bytes": memory.read(),
        "baseline_memory_bytes": memory.baseline,
        "memory_kind": memory.kind,
        "images_per_s": case["num_images"] / pass_s,
    }


if __name__ == "__main__":
    case_main(measure)
