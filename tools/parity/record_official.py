"""Record golden values from the official AnchorOPT code (zhengli97/ATPrompt) for the parity tests.

    python -m tools.parity.record_official --official /path/to/ATPrompt [--commit SHA] \
        [--out tests/data/official_parity.pt]

``--official`` is a checkout (work tree) of the official repository; nothing of it is copied
into this project: its ``clip/`` and ``trainers/`` files are read, patched in memory (the
`PATCHES` below), written to a temporary directory and imported from there together with a
minimal stand-in for the few Dassl names they import (`DASSL_STUB`). For every case the
official trainer's own ``build_model`` and ``forward_backward`` run on a seeded tiny CLIP
(``anchoropt.backbone.random_clip``, rounded to fp16 by the official loader and evaluated in
fp32 on the CPU), with fixed images, labels, anchor and Gumbel noise
(`tools.parity.gumbel_replay`); the file records the inputs and the outputs: loss, logits,
gradients, parameters before and after the SGD step, and the evaluation logits after it.

Cases: Stage I (``CoOp_Pretrain_Anchor``), ``CoOp_AnchorOPT``, ``CoCoOp_AnchorOPT``,
``MaPLe_AnchorOPT`` (prompt depth 2 on the 2-layer tiny CLIP) and ``DePT_AnchorOPT``.
See tools/parity/README.md for what the patches change and why none of them changes the algorithm.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from tools.parity.gumbel_replay import replay_gumbel

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "tests" / "data" / "official_parity.pt"

CLIP_SPEC, CLIP_SEED = "tiny", 0
CLASSNAMES = ["abyssinian", "american_bulldog", "beagle", "great_pyrenees"]
LABELS = [0, 2]
DATASET_NAME = "OxfordPets"  # the official code picks its anchor file and description file by this name
N_CTX, ANCHOR_LEN = 4, 1
SETTINGS = dict(GUMBEL_TEMP=0.7, PROMPT_CE_WEIGHT=2.0, KD_WEIGHT=3.0, KD_TEMPERATURE=2.0, ANCHOR_MSE_WEIGHT=1000.0)
OPTIM = dict(LR=0.002, MOMENTUM=0.9, WEIGHT_DECAY=5e-4)
MAPLE_DEPTH = 2
DEPT = dict(TYPE="linear", WEIGHT=0.3, TEST_TIME_FUSION=True)
DESCRIPTIONS_PER_CLASS = 3

TRAINER_FILES = {
    "stage1": ("coop_pretrain_anchor", "CoOp_Pretrain_Anchor"),
    "coop": ("coop_anchoropt", "CoOp_AnchorOPT"),
    "cocoop": ("cocoop_anchoropt", "CoCoOp_AnchorOPT"),
    "maple": ("maple_anchoropt", "MaPLe_AnchorOPT"),
    "dept": ("dept_anchoropt", "DePT_AnchorOPT"),
}

# (file, old, new, why). Each must apply at least once; `.data.half()` (the loader's fp16 rounding) is kept.
PATCHES: list[tuple[str, str, str, str]] = [
    ("trainers/*.py", "self.ctx_pos_params.half().cuda()", "self.ctx_pos_params", "P drawn in fp32 on the CPU"),
    ("trainers/*.py", ".cuda()", "", "CPU"),
    ("trainers/maple_anchoropt.py", "self.proj.half()", "pass", "learned projection kept in fp32"),
    ("trainers/maple_anchoropt.py", "torch.empty(n_ctx, 512)", "torch.empty(n_ctx, ctx_dim)", "hard-coded width"),
    (
        "trainers/maple_anchoropt.py",
        "nn.Linear(ctx_dim, 768)",
        "nn.Linear(ctx_dim, clip_model.visual.conv1.weight.shape[0])",
        "hard-coded vision width",
    ),
    ("clip/model*.py", ".permute(1, 0, 2).half()", ".permute(1, 0, 2)", "deep prompts kept in fp32"),
    ("clip/model*.py", "-1, -1).half()", "-1, -1)", "prompts kept in fp32"),
]

DASSL_STUB = {
    "dassl/__init__.py": "",
    "dassl/engine.py": '''
import torch
from types import SimpleNamespace


class _Registry:
    def register(self):
        return lambda cls: cls


TRAINER_REGISTRY = _Registry()


class TrainerX:
    """Just what the official step methods use: cfg, dm.dataset.classnames, device, the model dicts."""

    def __init__(self, cfg, classnames):
        self.cfg = cfg
        self.dm = SimpleNamespace(dataset=SimpleNamespace(classnames=list(classnames)))
        self.device = torch.device("cpu")
        self._models, self._optims, self._scheds = {}, {}, {}
        self.batch_idx, self.num_batches, self.lr_updates = 0, 2, 0
        self.check_cfg(cfg)
        self.build_model()

    def check_cfg(self, cfg):
        pass

    def register_model(self, name, model, optim=None, sched=None):
        self._models[name], self._optims[name], self._scheds[name] = model, optim, sched

    def update_lr(self):
        self.lr_updates += 1

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)
''',
    "dassl/utils.py": """
import torch


def load_checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def load_pretrained_weights(model, path):
    raise RuntimeError("not used by the recorder")
""",
    "dassl/optim.py": """
import torch


def build_optimizer(model, optim_cfg):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=optim_cfg.LR, momentum=optim_cfg.MOMENTUM, weight_decay=optim_cfg.WEIGHT_DECAY)


def build_lr_scheduler(optimizer, optim_cfg):
    return None
""",
    "dassl/metrics.py": """
def compute_accuracy(output, target, topk=(1,)):
    raise RuntimeError("not used by the recorder")
""",
}


class Node(dict):
    """Attribute access over nested dicts (the official code reads ``cfg.A.B``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config key {name} is not set in the recorder's config") from None


def node(tree: dict) -> Node:
    return Node({k: node(v) if isinstance(v, dict) else v for k, v in tree.items()})


def official_config(subsample: str = "base") -> Node:
    return node(
        {
            "MODEL": {"BACKBONE": {"NAME": "ViT-B/16"}, "INIT_WEIGHTS": ""},
            "INPUT": {"SIZE": (32, 32)},
            "DATASET": {"NAME": DATASET_NAME, "SUBSAMPLE_CLASSES": subsample},
            "OPTIM": {"NAME": "sgd", **OPTIM},
            "TRAINER": {
                "ANCHOROPT": {"N_CTX": N_CTX, "ANCHOR_LEN": ANCHOR_LEN, "MAX_TEMPLATE_LENGTH": 10, **SETTINGS},
                "COOP": {"PREC": "fp32", "N_CTX": 16, "CTX_INIT": "", "CSC": False, "CLASS_TOKEN_POSITION": "end"},
                "COCOOP": {"PREC": "fp32", "N_CTX": 16, "CTX_INIT": ""},
                "MAPLE": {"PREC": "fp32", "N_CTX": 2, "CTX_INIT": "", "PROMPT_DEPTH": MAPLE_DEPTH},
                "LINEAR_PROBE": dict(DEPT),
                "FILM": {"LINEAR_PROBE": True},
                "NAMES_TO_UPDATE": ["prompt_learner", "linear_probe", "film"],
            },
        }
    )


def descriptions() -> dict[str, list[str]]:
    return {
        name.replace("_", " "): [f"a {name.replace('_', ' ')} has feature {k} and looks {k + 1}." for k in range(3)]
        for name in CLASSNAMES
    }


def patch_sources(official: Path, work: Path) -> list[str]:
    """Copy the official clip/ and trainers/ files into `work` with `PATCHES` applied; return a log of them."""
    log = []
    for sub in ("clip", "trainers"):
        (work / sub).mkdir(parents=True)
        for path in sorted((official / sub).iterdir()):
            if path.is_file():
                (work / sub / path.name).write_bytes(path.read_bytes())
    (work / "trainers" / "__init__.py").write_text("")
    for pattern, old, new, why in PATCHES:
        hits = 0
        for path in sorted(work.glob(pattern)):
            text = path.read_text()
            count = text.count(old)
            if count:
                path.write_text(text.replace(old, new))
                hits += count
        if hits == 0:
            raise SystemExit(f"patch did not apply (has the official code changed?): {pattern}: {old!r}")
        log.append(f"{pattern}: {old!r} -> {new!r} ({hits}x; {why})")
    leftover = [
        str(p.relative_to(work))
        for p in work.glob("*/*.py")
        if any(".half()" in line and ".data.half()" not in line for line in p.read_text().splitlines())
        and p.name in {"model.py", "model_anchoropt.py", *(f"{m}.py" for m, _ in TRAINER_FILES.values())}
    ]
    for name in leftover:  # only the fp16-only branches may keep .half() (PREC fp16, never taken here)
        lines = [ln for ln in (work / name).read_text().splitlines() if ".half()" in ln and ".data.half()" not in ln]
        if any("meta_net.half()" not in ln and "self.VPT" not in ln for ln in lines):
            raise SystemExit(f"unpatched .half() left in {name}: {lines}")
    for rel, text in DASSL_STUB.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    return log


def tiny_state_dict() -> dict[str, torch.Tensor]:
    from anchoropt.backbone.random_clip import build_random_clip

    return {k: v.clone() for k, v in build_random_clip(CLIP_SPEC, seed=CLIP_SEED).state_dict().items()}


def fresh_official_clip(state: dict[str, torch.Tensor], design: dict) -> torch.nn.Module:
    """The official loader's result (weights rounded to fp16), then ``.float()`` as its fp32 path does."""
    import clip.model as official_model
    import clip.model_anchoropt as official_anchoropt

    build = official_anchoropt.build_model if design["trainer"] == "MaPLe" else official_model.build_model
    return build(copy.deepcopy(state), design).float()


def design_for(trainer: str) -> dict:
    base = {"vision_depth": 0, "language_depth": 0, "vision_ctx": 0, "language_ctx": 0}
    if trainer == "MaPLe":
        return {"trainer": "MaPLe", **base, "maple_length": N_CTX, "attribute_len": ANCHOR_LEN}
    return {"trainer": "CoOp", **base}


def learned_parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters() if "anchor_prompt_learner" not in n}


def informative_noise(theta: torch.Tensor, tau: float, generator: torch.Generator) -> torch.Tensor:
    """Gumbel noise whose sample puts the anchor in a slot other than 0, with a soft probability in
    [0.3, 0.8] there, so that where and how the anchor is read (value and gradient) shows in the outputs."""
    theta = theta.detach().float()
    for _ in range(1000):
        noise = -torch.empty(theta.shape).exponential_(generator=generator).log()
        soft = ((theta + noise) / tau).softmax(-1)
        hard = torch.nn.functional.one_hot(soft.argmax(-1), theta.shape[-1]).float()
        slots = torch.nonzero(hard[:, -1]).flatten().tolist()
        if slots and slots[0] > 0 and 0.3 <= float(soft[slots[0], -1]) <= 0.8:
            straight_through = hard - soft + soft  # the official ``== 1.0`` test must find the slot
            if bool((straight_through[:, -1] == 1.0).any()):
                return noise
    raise SystemExit("no informative Gumbel noise found in 1000 draws")


def run_case(case: str, state: dict, images: torch.Tensor, labels: torch.Tensor, anchor: torch.Tensor) -> dict:
    module_name, class_name = TRAINER_FILES[case]
    module = __import__(f"trainers.{module_name}", fromlist=[class_name])
    maple = case == "maple"
    loader = lambda cfg: fresh_official_clip(state, design_for("MaPLe" if maple else "CoOp"))  # noqa: E731
    module.load_clip_to_cpu = loader
    if maple:
        module.load_clip_to_cpu_vanilla = lambda cfg: fresh_official_clip(state, design_for("CoOp"))
    if case == "dept":
        sys.modules["trainers.coop_anchoropt"].load_clip_to_cpu = loader
    trainer_class = getattr(module, class_name)
    trainer = trainer_class(official_config(), CLASSNAMES)
    model = trainer.model
    learner = model.anchor_prompt_learner if case == "stage1" else getattr(model, "prompt_learner", None)
    if learner is None:
        learner = model.normal_prompt_learner
    record: dict[str, Any] = {"trainer": class_name, "initial": learned_parameters(learner)}
    if case == "dept":
        record["initial"].update(
            {n: p.detach().clone() for n, p in model.named_parameters() if "linear_probe" in n or "film" in n}
        )
    optimised = (
        {id(p) for group in trainer.optim_anchor.param_groups for p in group["params"]}
        if case == "stage1"
        else {id(p) for group in trainer.optim.param_groups for p in group["params"]}
    )
    named = dict(model.named_parameters())
    record["optimised"] = sorted(n for n, p in named.items() if id(p) in optimised and p.requires_grad)
    outputs: list = []
    hook = model.register_forward_hook(lambda m, args, out: outputs.append(out))
    generator = torch.Generator().manual_seed(1000 + list(TRAINER_FILES).index(case))
    slots = N_CTX + ANCHOR_LEN
    tau = SETTINGS["GUMBEL_TEMP"]
    train_noise = [] if case == "stage1" else [informative_noise(learner.ctx_pos_params, tau, generator)]
    model.train()
    with replay_gumbel(train_noise) as drawn:
        summary = trainer.forward_backward({"img": images.clone(), "label": labels.clone()})
    hook.remove()
    record["loss"] = float(next(iter(summary.values())))
    record["train_noise"] = train_noise
    record["train_positions"] = [p for p in drawn]
    out = outputs[0]
    if case == "stage1":
        record["anchor_features"] = out[1].detach().clone()
        record["description_features"] = out[2].detach().clone()
    elif case != "dept":
        record["logits"], record["logits_anchor"] = out[0].detach().clone(), out[1].detach().clone()
    record["grads"] = {n: named[n].grad.detach().clone() for n in record["optimised"] if named[n].grad is not None}
    record["updated"] = {n: named[n].detach().clone() for n in record["optimised"]}
    record["unchanged_without_grad"] = sorted(
        n
        for n, p in named.items()
        if p.requires_grad and id(p) not in optimised and n.split(".")[0] != "anchor_prompt_learner"
    )
    if case != "stage1":
        model.eval()
        eval_noise = [-torch.empty(slots, slots).exponential_(generator=generator).log()]
        with torch.no_grad(), replay_gumbel(eval_noise) as drawn:
            eval_out = model(images.clone())
        record["eval_noise"] = eval_noise
        record["eval_positions"] = [p for p in drawn]
        record["eval_logits"], record["eval_logits_anchor"] = eval_out[0].clone(), eval_out[1].clone()
    if maple:
        # The official deep read finds the anchor with an exact ``== 1.0`` test on the straight-through sample.
        record["official_found_anchor"] = bool((record["train_positions"][0][:, -1] == 1.0).any())
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, type=Path, help="a checkout of zhengli97/ATPrompt")
    parser.add_argument("--commit", default="", help="its commit (read with git when the checkout is a repository)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    official = args.official.resolve()
    commit = (
        args.commit
        or subprocess.run(
            ["git", "-C", str(official), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    )

    state = tiny_state_dict()  # built with our package's clip before the official one is imported
    for name in [
        m for m in sys.modules if m == "clip" or m.startswith("clip.") or m == "trainers" or m.startswith("trainers.")
    ]:
        del sys.modules[name]
    work = Path(tempfile.mkdtemp(prefix="anchoropt_parity_"))
    patch_log = patch_sources(official, work)
    sys.path.insert(0, str(work))
    os.chdir(work)
    torch.manual_seed(0)
    images = torch.randn(len(LABELS), 3, 32, 32)
    labels = torch.tensor(LABELS)
    anchor = 0.02 * torch.randn(ANCHOR_LEN, state["ln_final.weight"].shape[0])
    anchor_file = work / "anchor_weights" / DATASET_NAME / "anchor_prompt_learner" / "model.pth.tar"
    anchor_file.parent.mkdir(parents=True)
    torch.save({"state_dict": {"anchor_ctx_1": anchor.clone()}}, anchor_file)
    (work / "templates").mkdir()
    import json

    (work / "templates" / "pets_prompts_full.json").write_text(json.dumps(descriptions()))

    rounded = fresh_official_clip(state, design_for("CoOp")).state_dict()
    golden: dict[str, Any] = {
        "meta": {
            "official_repository": "https://github.com/zhengli97/ATPrompt",
            "official_commit": commit,
            "torch": torch.__version__,
            "clip_spec": CLIP_SPEC,
            "clip_seed": CLIP_SEED,
            "fp16_rounded_keys": sorted(k for k in state if not torch.equal(state[k], rounded[k].to(state[k]))),
            "patches": patch_log,
            "settings": {**SETTINGS, **OPTIM, "N_CTX": N_CTX, "ANCHOR_LEN": ANCHOR_LEN, "MAPLE_DEPTH": MAPLE_DEPTH},
            "dept": dict(DEPT),
        },
        "inputs": {
            "classnames": list(CLASSNAMES),
            "images": images,
            "labels": labels,
            "anchor": anchor,
            "descriptions": descriptions(),
        },
        "cases": {},
    }
    for case in TRAINER_FILES:
        torch.manual_seed(10 + list(TRAINER_FILES).index(case))
        golden["cases"][case] = run_case(case, state, images, labels, anchor)
        print(f"{case}: loss {golden['cases'][case]['loss']:.6f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(golden, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB), official commit {commit or 'unknown'}")


if __name__ == "__main__":
    main()
