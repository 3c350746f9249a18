"""What every benchmark shares: device, precision, synthetic inputs, timing, peak memory, subprocess cases, tables.

A benchmark module defines ``measure(case: dict, path: str, opts: RunOptions) -> dict`` for
one case and one path (``"ours"`` or ``"reference"``) and ends with ``case_main(measure)``;
`run_all` starts it once per (case, path) in a fresh interpreter, so each path's peak memory
is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from anchoropt.backbone import Precision

PATHS = ("ours", "reference")

# Class names are drawn from these (real words and made-up ones) so their token counts vary as real
# class names do: one token ("dog") up to ten or more ("scarlet kowarimel bunting").
WORDS = (
    "dog cat owl fox bee ant cow pig oak elm fig ivy kiwi lime pear plum rose tulip lily daisy iris orchid cactus "
    "maple willow birch cedar spruce golden silver spotted striped crested common great lesser greater northern "
    "southern eastern western red blue green black white brown grey yellow orange purple pink tiger lion zebra "
    "horse camel llama eagle falcon heron parrot pelican penguin sparrow warbler finch salmon trout shark whale "
    "dolphin octopus lobster crab beetle moth butterfly dragonfly mantis spider scorpion retriever terrier spaniel "
    "shepherd poodle bulldog mastiff hound sedan coupe pickup convertible minivan airliner biplane helicopter "
    "glider bicycle tractor canoe kayak yacht castle bridge lighthouse windmill church temple pagoda stadium "
    "library kitchen bedroom bathroom corridor airport harbor canyon glacier volcano desert meadow marsh forest "
    "pizza burger sushi ramen taco waffle pancake omelette risotto lasagna tiramisu cheesecake macaron dumplings "
    "juggling skiing surfing rowing fencing archery knitting typing drumming swimming"
).split()
SYLLABLES = (
    "ka",
    "mor",
    "vel",
    "tri",
    "zan",
    "bo",
    "quil",
    "sen",
    "dra",
    "pho",
    "lux",
    "ter",
    "gan",
    "rix",
    "mel",
    "dun",
    "wa",
    "ish",
    "ost",
    "yr",
)


# ---- device and precision ------------------------------------------------------------------


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def pick_precision(name: str, device: torch.device) -> str:
    """``auto``: fp16 on CUDA (the papers' setting), fp32 elsewhere."""
    if name == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    return name


def make_precision(name: str, device: torch.device) -> Precision:
    """The policy of a benchmark run. A half type named on the command line (``--prec fp16`` or ``bf16``)
    is used on a CPU too: unlike a shipped config's PREC, it was asked for explicitly."""
    return Precision(name, device, half_on_cpu=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- synthetic inputs ------------------------------------------------------------------------


def synthetic_classnames(count: int, seed: int = 0) -> list[str]:
    """`count` distinct class names of one to three words; about one word in five is made up (several BPE tokens)."""
    rng = random.Random(seed)
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        words = []
        for _ in range(rng.choices((1, 2, 3), weights=(45, 40, 15))[0]):
            if rng.random() < 0.8:
                words.append(rng.choice(WORDS))
            else:
                words.append("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
        name = "_".join(words)  # underscores, as dataset class names often come
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def synthetic_descriptions(classnames: list[str], per_class: int) -> list[list[str]]:
    """CuPL-like sentences (15-30 tokens) for each class."""
    shapes = ("round", "long", "small", "spotted", "striped", "bright", "dark", "tall")
    places = ("in the wild", "on a table", "at night", "in a city street", "near water", "in a studio")
    out = []
    for c, name in enumerate(classnames):
        name = name.replace("_", " ")
        out.append(
            [
                f"A photo of a {name}, which is usually {shapes[(c + k) % len(shapes)]} and often seen "
                f"{places[(c * 3 + k) % len(places)]}, with distinctive feature number {k}."
                for k in range(per_class)
            ]
        )
    return out


def random_images(count: int, resolution: int, seed: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
    """Normalised-looking random images [count, 3, res, res]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, resolution, resolution, generator=generator).to(device)


def random_labels(count: int, num_classes: int, seed: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed + 1)
    return torch.randint(num_classes, (count,), generator=generator).to(device)


# ---- peak memory -------------------------------------------------------------------------


def _proc_status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            match = re.search(rf"^{field_name}:\s+(\d+) kB", handle.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


class PeakMemory:
    """Peak memory of what runs between `reset()` and `read()`.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the process's peak resident set (VmHWM),
    reset to the current RSS through /proc/self/clear_refs where Linux allows it; elsewhere the
    lifetime peak (ru_maxrss), which still compares paths fairly because each runs in its own process.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "cpu_peak_rss"
        self.baseline = 0

    def reset(self) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # resets VmHWM to the current RSS
        except OSError:
            self.kind = "cpu_lifetime_peak_rss"
        self.baseline = (_proc_status_kib("VmRSS") or 0) * 1024

    def read(self) -> int:
        """The peak since `reset()`; never below the baseline (see below)."""
        if self.device.type == "cuda":
            synchronize(self.device)
            return max(int(torch.cuda.max_memory_allocated(self.device)), self.baseline)
        hwm = _proc_status_kib("VmHWM")
        peak = hwm * 1024 if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        # Linux counts resident pages per thread and folds them into the process counters lazily
        # (up to 64 pages per thread before 6.2, per-CPU batches since), so the VmHWM that clear_refs
        # resets can read a little below the VmRSS read just after it, and stay there when memory is
        # then freed. The baseline was resident during the measured interval, so the true peak is at
        # least that: taking the max makes `peak >= baseline` hold by construction; the slack itself
        # (well under a MiB per thread) is noise next to the hundreds of MiB the benchmarks compare.
        return max(peak, self.baseline)


# ---- timing ------------------------------------------------------------------------------


@dataclass
class RunOptions:
    """How one path is measured (shared by every benchmark)."""

    device: str = "auto"
    prec: str = "auto"
    spec: str = "ViT-B/16"
    warmup: int = 1
    reps: int = 3
    budget_s: float = 150.0
    long_iteration_s: float = 120.0
    seed: int = 0

    @property
    def torch_device(self) -> torch.device:
        return pick_device(self.device)

    @property
    def precision_name(self) -> str:
        return pick_precision(self.prec, self.torch_device)


@dataclass
class Timing:
    """Wall-clock and process-CPU seconds of the measured repetitions."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    warmup: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    def record(self) -> dict[str, Any]:
        return {
            "median_s": self.median,
            "cpu_median_s": self.cpu_median,
            "times_s": self.wall,
            "cpu_s": self.cpu,
            "reps": len(self.wall),
            "warmup": self.warmup,
        }


def time_repeated(fn: Callable[[], Any], device: torch.device, opts: RunOptions) -> Timing:
    """Median-ready timings of `fn`.

    Up to ``opts.warmup`` warm-up calls are discarded, except that a call longer than
    ``opts.long_iteration_s`` counts as a repetition (its one-time costs are negligible next to
    it, and the reference steps are too slow to run twice for nothing). Then repetitions run
    until ``opts.reps`` are done or ``opts.budget_s`` of measured time is spent (at least one).
    """
    timing = Timing()
    while len(timing.wall) < opts.reps:
        synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        synchronize(device)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if timing.warmup < opts.warmup and not timing.wall and wall < opts.long_iteration_s:
            timing.warmup += 1
            continue
        timing.wall.append(wall)
        timing.cpu.append(cpu)
        if sum(timing.wall) >= opts.budget_s:
            break
    return timing


# ---- one case in its own process ------------------------------------------------------------


def case_main(measure: Callable[[dict, str, RunOptions], dict]) -> None:
    """Command line of a benchmark module: ``--case JSON --path ours|reference --out FILE`` plus `RunOptions`."""
    parser = argparse.ArgumentParser(description="Measure one benchmark case for one path (used by bench/run_all.py)")
    parser.add_argument("--case", required=True, help="the case as JSON")
    parser.add_argument("--path", required=True, choices=PATHS)
    parser.add_argument("--out", required=True, help="JSON file to write the result to")
    parser.add_argument("--options", default="{}", help="RunOptions as JSON")
    args = parser.parse_args()
    opts = RunOptions(**json.loads(args.options))
    torch.manual_seed(opts.seed)
    result = measure(json.loads(args.case), args.path, opts)
    result["torch_threads"] = torch.get_num_threads()
    result["precision"] = make_precision(opts.precision_name, opts.torch_device).describe()  # the one in effect
    with open(args.out, "w") as handle:
        json.dump(result, handle)


def run_case_in_subprocess(
    module: str, case: dict, path: str, opts: RunOptions, timeout_s: float | None = None
) -> dict:
    """Run ``python -m <module>`` for one (case, path); its result dict, or ``{"error": ...}`` when it failed."""
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bench_{os.getpid()}_{time.time_ns()}.json")
    cmd = [
        sys.executable,
        "-m",
        module,
        "--case",
        json.dumps(case),
        "--path",
        path,
        "--out",
        out,
        "--options",
        json.dumps(asdict(opts)),
    ]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    elapsed = time.perf_counter() - start
    try:
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            reason = "killed (out of memory?)" if proc.returncode in (-9, 137) else f"exit code {proc.returncode}"
            return {"error": f"{reason}: " + " | ".join(tail)}
        with open(out) as handle:
            result = json.load(handle)
    finally:
        if os.path.exists(out):
            os.remove(out)
    result["process_s"] = elapsed
    return result


def cpu_utilisation(result: dict) -> float | None:
    """Process CPU seconds / (wall seconds x torch threads) of the least busy timed phase, or None.

    About 1 when the path had its cores to itself (idle intra-op threads spin); near 0.5 on two
    cores when another process took one of them, which inflates the wall-clock time.
    """
    threads = result.get("torch_threads")
    if not threads:
        return None
    phases = [result] + [result[key] for key in ("setup", "batch", "step") if isinstance(result.get(key), dict)]
    values = [
        statistics.median(c / w for c, w in zip(phase["cpu_s"], phase["times_s"]) if w > 0)
        for phase in phases
        if phase.get("times_s") and any(w > 0 for w in phase["times_s"])
    ]
    return min(values) / threads if values else None


# ---- records and tables ---------------------------------------------------------------------


def machine_description(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            match = re.search(r"^model name\s*:\s*(.+)$", handle.read(), re.MULTILINE)
        cpu = match.group(1).strip() if match else cpu
    except OSError:
        pass
    memory = None
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        pass
    info = {
        "device": str(device),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_bytes": memory,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


def format_bytes(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"


def format_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def ratio(reference: float | None, ours: float | None) -> float | None:
    if not reference or not ours:
        return None
    return reference / ours
