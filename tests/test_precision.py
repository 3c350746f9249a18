"""Half precision through train.py on the CPU: PREC fp16, bf16 and amp for every trainer family.

Every shipped config says ``PREC fp16``; ``MODEL.BACKBONE.HALF_ON_CPU True`` makes the CPU run
that path (and bf16) instead of falling back to fp32, so the frozen-CLIP-in-half-precision path
is tested here. Each (trainer, precision) pair is one short train.py run (1 epoch, 2 base classes,
2 steps, a test pass), watched for:

- the training losses are finite;
- the frozen CLIP weights are stored in the half type (fp16/bf16; fp32 under amp) and unchanged;
- every matrix product with a frozen weight runs in the half type (fp16/bf16 weights, or amp's
  bf16 autocast) on the model's own weight tensor: a frozen model left in fp32, or weights cast
  to another dtype on the fly in a hot path, fails;
- the learned tensors are fp32, in memory and in the checkpoint files;
- evaluation logits are within the format's rounding-error tolerance (`logit_tolerance`) of an
  fp32 model with the same learned tensors, and not identical to them (fp16/bf16 really ran);
- ``results.json`` records the precision used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

import trainers  # noqa: F401  (registers the trainers and their config nodes)
from anchoropt.backbone.random_clip import CLIP_SPECS
from anchoropt.cli.errors import run_cli
from anchoropt.cli.train import main
from anchoropt.engine import TRAINER_REGISTRY, load_checkpoint
from tests.support.anchoropt_runs import (
    TinyEnv,
    build_trainer_from_args,
    make_tiny_env,
    read_results,
    record_method,
    run_train,
)
from tests.support.clip_fixtures import tiny_clip, tiny_clip_dir, tiny_clip_state_dict_file  # noqa: F401
from tests.support.variant_runs import evaluation_logits, first_test_images
from trainers.base import ClipTrainer

# Trainer -> its PREC key (the AnchorOPT variants and Stage I use their baseline's node).
TRAINERS = {
    "CoOp": "TRAINER.COOP.PREC",
    "CoOp_AnchorOPT": "TRAINER.COOP.PREC",
    "AnchorOPT_StageI": "TRAINER.COOP.PREC",
    "CoCoOp": "TRAINER.COCOOP.PREC",
    "CoCoOp_AnchorOPT": "TRAINER.COCOOP.PREC",
    "MaPLe": "TRAINER.MAPLE.PREC",
    "MaPLe_AnchorOPT": "TRAINER.MAPLE.PREC",
    "DePT": "TRAINER.COOP.PREC",
    "DePT_AnchorOPT": "TRAINER.COOP.PREC",
}
# Stage I with its image term too (the shipped configs leave it out), so its training also runs the image tower.
TRAINER_OPTS = {"AnchorOPT_StageI": ("TRAINER.ANCHOROPT.ANCHOR_CE_WEIGHT", "1.0")}
HALF_PRECS = ("fp16", "bf16", "amp")
STORED_DTYPE = {"fp16": torch.float16, "bf16": torch.bfloat16, "amp": torch.float32}
# Unit roundoff u = 2^-p of each format (p = significand bits incl. the implicit one: fp16 11, bf16 8).
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
# The CPU runs are the CI coverage; the same runs on CUDA are marked `cuda` (bench/cuda_precision_check.py runs them).
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=(pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
    ),
]


def compute_dtype(prec: str, device: str) -> torch.dtype:
    """The dtype the frozen matrix products run in: the stored weights' (fp16, bf16), or amp's autocast type."""
    if prec == "amp":
        return torch.float16 if device == "cuda" else torch.bfloat16  # CPU autocast: bf16
    return STORED_DTYPE[prec]


EPOCHS = 1
FAST = (
    "OPTIM.MAX_EPOCH",
    str(EPOCHS),
    "TRAINER.MAPLE.PROMPT_DEPTH",
    "2",  # the tiny CLIP has two layers per tower
    "DATALOADER.TEST.BATCH_SIZE",
    "8",
)
# Frozen CLIP tensors that PREC fp16/bf16 store in the half type (LayerNorms, embeddings, logit scale stay fp32).
MATRIX_WEIGHTS = ("in_proj_weight", "out_proj.weight", "c_fc.weight", "c_proj.weight", "conv1.weight")
MATRIX_TENSORS = ("text_projection", "visual.proj")


def logit_tolerance(dtype: torch.dtype, layers: int, logit_scale: float) -> float:
    """How far half-precision logits ``z = s·cos(f_image, f_text)`` may be from the fp32 ones.

    Each residual block rounds its activations about 15 times on the way to the features: the
    LayerNorm output cast, the qkv projection, attention scores/softmax and the weighted sum, the
    output projection, the residual add, the second LayerNorm cast, c_fc, QuickGELU, c_proj, the
    second residual add (11), plus the rounding of its four stored weight matrices; the embedding
    (patch convolution or token lookup plus positions) and the final LayerNorm and projection add
    about 4: S = 15·layers + 4 roundings of relative size <= u along the deepest path. Matrix
    products accumulate in fp32 (CPU kernels, CUDA tensor cores), so a dot product costs one rounding
    whatever its width.
    Independent rounding errors grow like sqrt(S)·u, not S·u (probabilistic rounding error
    analysis: Higham & Mary, SIAM J. Sci. Comput. 41(5), 2019), so each normalised feature is off by
    at most about sqrt(S)·u; a cosine by at most the sum of its two features' errors; a logit by s
    times that: ``tol = s · 2·sqrt(S) · u``. For the tiny CLIP (2 layers, s = 14.3): fp16 0.081,
    bf16 and amp 0.65, about 10x the largest error observed (fp16 0.006, bf16 0.043, amp 0.061),
    while a model computing something else is off by the spread of the logits itself.
    DePT's fused logits add its head's ``W·f``, whose rows (norm < s, asserted) change less than s·cos.
    """
    return logit_scale * 2 * math.sqrt(15 * layers + 4) * UNIT_ROUNDOFF[dtype]


@dataclass
class Product:
    """One matrix product of a training step with a frozen CLIP weight."""

    weight: str
    input_dtype: torch.dtype
    weight_dtype: torch.dtype
    output_dtype: torch.dtype


class FrozenProducts(TorchFunctionMode):
    """Records the linear/conv/matmul calls of a forward pass that involve the model's tensors.

    A call whose weight argument is not a tensor of the model (a converted copy) is recorded as
    ``foreign``: casting weights on the fly is what the half-precision paths must not need.
    """

    NAMES = {"linear", "conv2d", "matmul", "__matmul__"}

    def __init__(self, frozen: dict[int, str], learned: dict[int, str]) -> None:
        super().__init__()
        self.frozen, self.learned = frozen, learned
        self.products: list[Product] = []
        self.foreign: list[tuple[str, tuple, torch.dtype]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name in self.NAMES and len(args) >= 2 and isinstance(out, torch.Tensor):
            x, weight = args[0], args[1]
            owner = self.frozen.get(id(weight)) or self.frozen.get(id(x))
            if owner is not None:
                self.products.append(Product(owner, x.dtype, weight.dtype, out.dtype))
            elif name in ("linear", "conv2d") and id(weight) not in self.learned:
                self.foreign.append((name, tuple(weight.shape), weight.dtype))
        return out


def tensors_by_id(module: torch.nn.Module, learned: bool) -> dict[int, str]:
    return {
        id(t): name
        for name, t in [*module.named_parameters(), *module.named_buffers()]
        if name.startswith("prompt_learner.") == learned
    }


def frozen_tensors(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items() if not k.startswith("prompt_learner.")}


def learned_tensors(trainer) -> dict[str, torch.Tensor]:
    """Every tensor of the registered (optimised, checkpointed) modules."""
    return {
        f"{name}.{k}": v.detach().clone()
        for name in trainer.get_model_names()
        for k, v in trainer._models[name].state_dict().items()
    }


@dataclass
class HalfRun:
    trainer: str
    prec: str
    device: str
    out: Path
    losses: list[float] = field(default_factory=list)
    products: list[Product] = field(default_factory=list)
    foreign: list = field(default_factory=list)
    frozen_before: dict = field(default_factory=dict)
    frozen_after: dict = field(default_factory=dict)
    learned_before: dict = field(default_factory=dict)
    learned_after: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)
    head_row_norm: float = 0.0
    images: torch.Tensor | None = None
    logits: torch.Tensor | None = None


def half_args(env: TinyEnv, trainer: str, prec: str, out: Path, *opts: str, device: str = "cpu") -> list[str]:
    return env.args(
        trainer,
        out,
        *FAST,
        "USE_CUDA",
        str(device == "cuda"),
        "MODEL.BACKBONE.HALF_ON_CPU",
        "True",
        TRAINERS[trainer],
        prec,
        "TRAINER.ANCHOROPT.ANCHOR_PATH",
        str(env.stage1),
        *TRAINER_OPTS.get(trainer, ()),
        *opts,
    )


def run_half(env: TinyEnv, trainer: str, prec: str, device: str) -> HalfRun:
    """One watched train.py run of `trainer` in `prec` on `device`."""
    cls = TRAINER_REGISTRY.get(trainer)
    run = HalfRun(trainer, prec, device, env.root / f"{trainer}_{prec}_{device}")

    def before(t, _):
        run.frozen_before, run.learned_before = frozen_tensors(t), learned_tensors(t)

    def watched_step(original):
        def step(self, batch):
            if run.losses:  # the products of one step tell what every step runs
                summary = original(self, batch)
            else:
                with FrozenProducts(tensors_by_id(self.model, False), tensors_by_id(self.model, True)) as mode:
                    summary = original(self, batch)
                run.products, run.foreign = mode.products, mode.foreign
            run.losses.append(summary["loss"])
            return summary

        return step

    def after(t, _):
        run.frozen_after, run.learned_after = frozen_tensors(t), learned_tensors(t)
        run.state = {k: v.detach().clone() for k, v in t.model.prompt_learner.state_dict().items()}
        head = getattr(t.model.prompt_learner, "head", None)
        if getattr(head, "linear", None) is not None:
            run.head_row_norm = float(head.linear.weight.norm(dim=1).max())
        run.images = first_test_images(t)
        run.logits = evaluation_logits(t, run.images)

    with pytest.MonkeyPatch.context() as mp:
        record_method(mp, cls, "before_train", before)
        mp.setattr(cls, "forward_backward", watched_step(cls.forward_backward))
        record_method(mp, cls, "after_train", after)
        assert run_train(half_args(env, trainer, prec, run.out, device=device)) == 0
    return run


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_clip_state_dict_file) -> TinyEnv:  # noqa: F811
    """4 classes (2 base), 2 shots in batches of 2: two steps per epoch; one fp32 Stage I anchor."""
    env = make_tiny_env(tmp_path_factory.mktemp("precision"), tiny_clip_state_dict_file, n_classes=4, n_per_class=6)
    env.num_shots, env.batch_size = 2, 2
    env.stage1 = env.root / "stage1"
    assert run_train(env.args("AnchorOPT_StageI", env.stage1, *FAST, "TEST.NO_TEST", "True")) == 0
    return env


@pytest.fixture(scope="module")
def fp32_trainers(env):
    """fp32 trainers built as train.py builds them (not trained), one per trainer, made when first needed."""
    built: dict = {}

    def get(trainer: str, device: str):
        if (trainer, device) not in built:
            out = env.root / f"{trainer}_fp32_{device}"
            fp32 = build_trainer_from_args(half_args(env, trainer, "fp32", out, device=device))
            if hasattr(fp32, "trained_classnames"):  # what before_train sets: evaluate as after training
                fp32.trained_classnames = list(fp32.classnames)
            built[trainer, device] = fp32
        return built[trainer, device]

    return get


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("prec", HALF_PRECS)
@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_half_precision_training_through_train_py(env, fp32_trainers, tiny_clip, trainer, prec, device):  # noqa: F811
    run = run_half(env, trainer, prec, device)
    half = STORED_DTYPE[prec]

    # Training ran and its losses are finite.
    assert len(run.losses) == 2 * EPOCHS and all(math.isfinite(loss) for loss in run.losses), run.losses

    # The frozen CLIP: matrix weights in the half type (fp32 under amp), nothing else changed or updated.
    matrices = {
        k: v.dtype for k, v in run.frozen_before.items() if k.endswith(MATRIX_WEIGHTS) or k.endswith(MATRIX_TENSORS)
    }
    assert any(k.endswith("conv1.weight") for k in matrices) and any("c_fc" in k for k in matrices)
    assert set(matrices.values()) == {half}, {k: d for k, d in matrices.items() if d != half}
    assert all(v.dtype == torch.float32 for k, v in run.frozen_before.items() if k.endswith("ln_final.weight"))
    assert run.frozen_before.keys() == run.frozen_after.keys()
    assert [k for k in run.frozen_before if not torch.equal(run.frozen_before[k], run.frozen_after[k])] == []

    # Every product with a frozen weight ran in the half type, on the stored weight itself, in both towers.
    compute = compute_dtype(prec, device)
    wrong = [p for p in run.products if p.output_dtype != compute or p.weight_dtype != half]
    assert wrong == [], wrong[:5]
    if prec != "amp":  # without autocast the activations entering the frozen layers are in the half type too
        assert all(p.input_dtype == half for p in run.products), [p for p in run.products if p.input_dtype != half][:5]
    weights = {p.weight for p in run.products}
    assert any("visual" in w for w in weights) and any("visual" not in w for w in weights), weights
    assert run.foreign == [], run.foreign[:5]

    # Learned tensors: fp32 in memory, trained, and fp32 in every checkpoint file.
    assert run.learned_after and all(
        v.dtype == torch.float32 for v in run.learned_after.values() if v.is_floating_point()
    )
    assert any(not torch.equal(run.learned_before[k], v) for k, v in run.learned_after.items())
    checkpoints = sorted(run.out.glob(f"*/model.pth.tar-{EPOCHS}"))
    assert checkpoints
    for path in checkpoints:
        stored = load_checkpoint(str(path))["state_dict"]
        assert all(v.dtype == torch.float32 for v in stored.values() if v.is_floating_point()), path
    if trainer == "AnchorOPT_StageI":
        anchor = torch.load(run.out / "anchor.pth", map_location="cpu", weights_only=False)["anchor"]
        assert anchor.dtype == torch.float32

    # Logits: within the format's rounding-error tolerance of an fp32 model with the same learned tensors.
    fp32 = fp32_trainers(trainer, device)
    fp32.model.prompt_learner.load_state_dict(run.state)
    reference = evaluation_logits(fp32, run.images)
    scale = float(tiny_clip.logit_scale.exp())
    assert run.head_row_norm < scale
    layers = max(CLIP_SPECS["tiny"]["transformer_layers"], CLIP_SPECS["tiny"]["vision_layers"])
    error = float((run.logits - reference).abs().max())
    tolerance = logit_tolerance(compute, layers, scale)
    assert error <= tolerance, (error, tolerance)
    assert error > 0  # computed in the half type, not silently in fp32

    # results.json says what ran.
    precision = read_results(run.out)["precision"]
    assert precision == {
        "requested": prec,
        "used": prec,
        "frozen_weights": str(half).removeprefix("torch."),
        "autocast": str(compute).removeprefix("torch.") if prec == "amp" else None,
        # Only amp's fp16 autocast (CUDA) scales the loss: fp16 weights train fp32 parameters, bf16 needs none.
        "loss_scaling": prec == "amp" and device == "cuda",
        "device": device,
    }


def test_half_precision_on_the_cpu_needs_the_key_and_results_record_the_fallback(env):
    out = env.root / "fallback"
    assert run_train(env.args("CoOp", out, *FAST, "USE_CUDA", "False", "TRAINER.COOP.PREC", "fp16")) == 0  # fp32
    precision = read_results(out)["precision"]
    assert (precision["requested"], precision["used"], precision["frozen_weights"]) == ("fp16", "fp32", "float32")


def test_an_fp16_overflow_stops_training_with_its_epoch_batch_and_advice(env, capsys):
    """Out-of-range images overflow fp16's range (max 65504) in the patch convolution: the loss is NaN.
    The same batch is finite in fp32, whose LayerNorm rescales the large activations."""
    out = env.root / "overflow"
    parse = ClipTrainer.parse_batch_train
    seen = {}

    def huge_second_batch(self, batch):
        image, label = parse(self, batch)
        if (self.epoch, self.batch_idx) == (0, 1):
            image = torch.full_like(image, 6e4)  # representable in fp16; the convolution's sums are not
            seen["image"] = image
            seen["model"] = self.model
        return image, label

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ClipTrainer, "parse_batch_train", huge_second_batch)
        capsys.readouterr()
        code = run_cli(main)(half_args(env, "CoOp", "fp16", out))
    stderr = capsys.readouterr().err.strip()
    assert code == 2 and len(stderr.splitlines()) == 1 and "Traceback" not in stderr, stderr
    assert stderr.startswith("error: Loss is nan at epoch 1, batch 2 of 2: training stopped"), stderr
    assert "no epoch had finished, so no checkpoint was written" in stderr
    assert (
        "TRAINER.COOP.PREC is fp16, whose narrow range is the usual cause: rerun with TRAINER.COOP.PREC fp32" in stderr
    )
    assert not (out / "results.json").exists()
    with torch.no_grad():
        half_features = seen["model"].image_encoder(seen["image"])
        fp32_model = build_trainer_from_args(half_args(env, "CoOp", "fp32", env.root / "overflow_fp32")).model
        fp32_features = fp32_model.image_encoder(seen["image"])
    assert not torch.isfinite(half_features).all() and torch.isfinite(fp32_features).all()
