"""One Stage II training step (forward + backward + optimiser step): ours vs the reference.

Case: ``{"method": "coop" | "maple", "num_classes": C, "batch_size": B}``. Our step is
`AnchorOPTStageII.forward_backward` (anchor-branch features cached once per class set, truncated
text encoding); the reference step is `ReferenceStageII.train_step` (77-position text, anchor
branch re-encoded every step). The batch is a fixed random one, moved to the device each step
as a loader's batch would be; data loading itself is not timed.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from bench.common import (
    PeakMemory,
    RunOptions,
    case_main,
    random_images,
    random_labels,
    synthetic_classnames,
    time_repeated,
)
from bench.ours_paths import StageIIHarness
from bench.reference_paths import ReferenceStageII
from bench.setups import Stage2Setup, build_stage2, load_random_clip

MODULE = "bench.bench_stage2_step"


def cases(quick: bool = False) -> list[dict[str, Any]]:
    """The paper's batch sizes (CoOp 32, MaPLe 4) at 50 and 500 classes; a smaller set for ``--quick``."""
    if quick:
        return [
            {"method": "coop", "num_classes": 20, "batch_size": 4},
            {"method": "maple", "num_classes": 20, "batch_size": 2},
        ]
    return [
        {"method": method, "num_classes": classes, "batch_size": batch}
        for method, batch in (("coop", 32), ("maple", 4))
        for classes in (50, 500)
    ]


def case_label(case: dict) -> str:
    name = {"coop": "CoOp+AnchorOPT", "maple": "MaPLe+AnchorOPT"}[case["method"]]
    return f"{name} step, {case['num_classes']} classes, batch {case['batch_size']}"


def build_step(case: dict, path: str, opts: RunOptions) -> tuple[Callable[[], dict], Stage2Setup, dict]:
    """A callable running one training step of `path` (returns the loss), the built model, and facts about
    the setup (text positions, time to fill our anchor-feature cache)."""
    device = opts.torch_device
    clip_model, precision = load_random_clip(opts.spec, device, opts.precision_name, opts.seed)
    classnames = synthetic_classnames(case["num_classes"], opts.seed)
    setup = build_stage2(clip_model, case["method"], classnames, opts.seed)
    resolution = clip_model.visual.input_resolution
    images = random_images(case["batch_size"], resolution, opts.seed)  # on the CPU, like a loader's batch
    labels = random_labels(case["batch_size"], case["num_classes"], opts.seed)
    learner = setup.learner
    info: dict[str, Any] = {}
    if path == "ours":
        harness = StageIIHarness(setup, precision)
        start = time.perf_counter()
        harness.anchor_text_features()  # the once-per-class-set cache the first step would fill
        info["setup_s"] = time.perf_counter() - start
        info["text_positions"] = learner.layout.length
        return (lambda: harness.train_step(images, labels)), setup, info
    reference = ReferenceStageII(setup, clip_model, precision)
    info["setup_s"] = 0.0
    info["text_positions"] = clip_model.context_length
    return (lambda: reference.train_step(images, labels)), setup, info


def measure(case: dict, path: str, opts: RunOptions) -> dict:
    device = opts.torch_device
    step, _, info = build_step(case, path, opts)
    memory = PeakMemory(device)
    memory.reset()
    timing = time_repeated(step, device, opts)
    return {
        "case": case,
        "path": path,
        **timing.record(),
        **info,
        "peak_memory_bytes": memory.read(),
        "baseline_memory_bytes": memory.baseline,
        "memory_kind": memory.kind,
        "images_per_s": case["batch_size"] / timing.median,
    }


if __name__ == "__main__":
    case_main(measure)
