"""Running the unchanged protocol scripts on the toy world: environment, options and epochs sized for a CPU.

The scripts take the world like any dataset root (``DATA``) plus ``KEY VALUE`` options: the backbone file, the
input size, and shorter schedules than the published ViT-B/16 ones (the world's images are 32 px and its CLIP
has 1.3 M parameters, so a few epochs converge).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Optional, Sequence

from anchoropt.toyworld import spec
from anchoropt.toyworld.world import World

REPO = Path(__file__).resolve().parents[2]
SOURCE_ENV = "XD_SOURCE"  # the protocol scripts' cross-dataset / DG source (default imagenet)

# Epochs per trainer on the world (16 shots; ToyNet base: 32 classes -> 16 steps per epoch at batch 32).
EPOCHS = {
    "CoOp": 10,
    "CoOp_AnchorOPT": 10,
    "CoCoOp": 2,
    "CoCoOp_AnchorOPT": 2,
    "MaPLe": 5,
    "MaPLe_AnchorOPT": 5,
    "DePT": 10,
    "DePT_AnchorOPT": 10,
}
STAGE1_EPOCHS = 10
LR = {
    "CoOp": 0.02,
    "CoOp_AnchorOPT": 0.02,
    "CoCoOp": 0.02,
    "CoCoOp_AnchorOPT": 0.02,
    "DePT": 0.02,
    "DePT_AnchorOPT": 0.02,
}  # the published 0.002 is tuned for 200 epochs; 10x for the world's short schedules
STAGE1_LR = 0.02
# Options for every run: no worker processes (2-core machines), fp32 (CPU), one test batch per few hundred images,
# and crops of at least half the image (the default 8% crop of a 32 px image can cut the shape away).
COMMON = (
    "DATALOADER.NUM_WORKERS",
    "0",
    "DATALOADER.TEST.BATCH_SIZE",
    "256",
    "TRAINER.COOP.PREC",
    "fp32",
    "TRAINER.COCOOP.PREC",
    "fp32",
    "TRAINER.MAPLE.PREC",
    "fp32",
    "TRAIN.PRINT_FREQ",
    "100",
    "INPUT.RRCROP_SCALE",
    "(0.5, 1.0)",
)


# CoOp and CoOp_AnchorOPT start their context from "a photo of a" (CoOp's ctxv1 setting) rather than noise: the
# world's schedules are too short to recover from a random 16-token context, and both start alike.
CONTEXT_INIT = {
    "CoOp": ("TRAINER.COOP.CTX_INIT", "a photo of a"),
    "CoOp_AnchorOPT": ("TRAINER.ANCHOROPT.CTX_INIT", "a photo of a"),
}


# MaPLe's configs prompt 9 of ViT-B/16's 12 layers; the world's CLIP has 3, and all of them are prompted.
DEEP_PROMPT_TRAINERS = ("MaPLe", "MaPLe_AnchorOPT")


def trainer_options(world: World, trainer: str, epochs: Optional[int] = None) -> list[str]:
    """``KEY VALUE`` options for the protocol scripts' ``train.py`` calls of ``trainer`` on ``world``."""
    opts = [*world.options(), *COMMON, *CONTEXT_INIT.get(trainer, ())]
    if trainer in DEEP_PROMPT_TRAINERS:
        model = world.info["recipe"]["model"]
        opts += ["TRAINER.MAPLE.PROMPT_DEPTH", str(min(model["vision_layers"], model["transformer_layers"]))]
    if trainer in EPOCHS:
        opts += ["OPTIM.MAX_EPOCH", str(epochs or EPOCHS[trainer])]
    if trainer in LR:
        opts += ["OPTIM.LR", str(LR[trainer])]
    return opts


def script_env(
    world: World,
    trainer: str,
    output: os.PathLike,
    stage1_epochs: int = STAGE1_EPOCHS,
    extra: Optional[Mapping[str, str]] = None,
) -> dict[str, str]:
    """Environment of a protocol script run: DATA, OUTPUT, TRAINER, the world as source, Stage I's schedule."""
    env = dict(os.environ)
    env.update(
        {
            "DATA": str(world.data_root),
            "OUTPUT": str(output),
            "TRAINER": trainer,
            SOURCE_ENV: spec.SOURCE.config,
            "PYTHON": sys.executable,
            "STAGE1_OPTS": f"OPTIM.MAX_EPOCH {stage1_epochs} OPTIM.LR {STAGE1_LR}",
        }
    )
    env.update(extra or {})
    return env


def script_command(
    script: str, args: Sequence[str], world: World, trainer: str, epochs: Optional[int] = None
) -> list[str]:
    """``bash scripts/<script> ARGS... <world options>``: the call `run_script` makes (run it in `script_env`)."""
    return ["bash", str(REPO / "scripts" / script), *args, *trainer_options(world, trainer, epochs)]


def run_script(
    script: str,
    args: Sequence[str],
    world: World,
    trainer: str,
    output: os.PathLike,
    log_file: Optional[os.PathLike] = None,
    epochs: Optional[int] = None,
    stage1_epochs: int = STAGE1_EPOCHS,
) -> None:
    """``bash scripts/<script> ARGS... <world options>``; CalledProcessError when it fails (output in the log)."""
    cmd = script_command(script, args, world, trainer, epochs)
    env = script_env(world, trainer, output, stage1_epochs)
    if log_file is None:
        subprocess.run(cmd, env=env, check=True)
        return
    with open(log_file, "a") as log:
        log.write(f"$ TRAINER={trainer} {' '.join(cmd)}\n")
        log.flush()
        subprocess.run(cmd, env=env, check=True, stdout=log, stderr=subprocess.STDOUT)
