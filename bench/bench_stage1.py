"""Stage I (anchor from descriptions) for one epoch: ours vs the reference.

Case: ``{"num_classes": C, "sentences_per_class": K, "shots": 16, "batch_size": 32}``; an
epoch has ``C x shots // batch_size`` optimiser steps (Dassl's loader drops the last partial
batch). Ours encodes the descriptions once without a graph and takes image-free steps
(`AnchorOPT_StageI.forward_backward(None)`); the reference builds the description graph on a
second CLIP and takes steps that encode a batch of images and back-propagate through that graph.

Epoch time = setup + steps x (median step). The setup is timed once (the reference's holds a
graph that cannot be rebuilt without doubling memory); steps are timed over repetitions.
The reference's memory grows with C x K (about 40 MB of graph per sentence for ViT-B/16 in
fp32), which is why the default K is small on a CPU machine.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from bench.common import (
    PeakMemory,
    RunOptions,
    Timing,
    case_main,
    random_images,
    synchronize,
    synthetic_classnames,
    synthetic_descriptions,
    time_repeated,
)
from bench.ours_paths import StageIHarness
from bench.reference_paths import ReferenceStageI
from bench.setups import build_stage1, load_random_clip

MODULE = "bench.bench_stage1"


def cases(quick: bool = False, sentences_per_class: int = 2) -> list[dict[str, Any]]:
    if quick:
        return [{"num_classes": 20, "sentences_per_class": 1, "shots": 16, "batch_size": 4}]
    return [{"num_classes": 100, "sentences_per_class": sentences_per_class, "shots": 16, "batch_size": 32}]


def case_label(case: dict) -> str:
    return (
        f"Stage I epoch, {case['num_classes']} classes x {case['sentences_per_class']} descriptions "
        f"({steps_per_epoch(case)} steps of batch {case['batch_size']})"
    )


def steps_per_epoch(case: dict) -> int:
    return max(1, case["num_classes"] * case["shots"] // case["batch_size"])


def prepare(case: dict, path: str, opts: RunOptions) -> tuple[Any, Callable[[], dict], list[list[str]], int]:
    """(runner with ``encode(descriptions)``, one training step returning the loss, descriptions, text positions)."""
    clip_model, precision = load_random_clip(opts.spec, opts.torch_device, opts.precision_name, opts.seed)
    classnames = synthetic_classnames(case["num_classes"], opts.seed)
    descriptions = synthetic_descriptions(classnames, case["sentences_per_class"])
    setup = build_stage1(clip_model, classnames, case["sentences_per_class"], opts.seed)
    if path == "ours":
        runner = StageIHarness(setup, precision)
        return runner, runner.train_step, descriptions, setup.learner.layout.length
    runner = ReferenceStageI(setup, clip_model, precision)
    images = random_images(case["batch_size"], clip_model.visual.input_resolution, opts.seed)
    return runner, (lambda: runner.train_step(images)), descriptions, clip_model.context_length


def measure(case: dict, path: str, opts: RunOptions) -> dict:
    device = opts.torch_device
    runner, step, descriptions, text_positions = prepare(case, path, opts)
    memory = PeakMemory(device)
    memory.reset()
    synchronize(device)
    start = time.perf_counter(), time.process_time()
    runner.encode(descriptions)
    synchronize(device)
    setup_timing = Timing(wall=[time.perf_counter() - start[0]], cpu=[time.process_time() - start[1]])
    step_timing = time_repeated(step, device, opts)
    steps = steps_per_epoch(case)
    epoch_s = setup_timing.median + steps * step_timing.median
    return {
        "case": case,
        "path": path,
        "median_s": epoch_s,
        "cpu_median_s": setup_timing.cpu_median + steps * step_timing.cpu_median,
        "setup": setup_timing.record(),
        "step": step_timing.record(),
        "steps_per_epoch": steps,
        "reps": len(step_timing.wall),
        "text_positions": text_positions,
        "peak_memory_bytes": memory.read(),
        "baseline_memory_bytes": memory.baseline,
        "memory_kind": memory.kind,
        "images_per_s": steps * case["batch_size"] / epoch_s,
    }


if __name__ == "__main__":
    case_main(measure)
