"""``TRAINER.ANCHOROPT``: the settings every AnchorOPT trainer shares (Stage I and all Stage II variants).

Key names of the published scripts are kept; precision comes from each
baseline's own node (``TRAINER.COOP.PREC``, ``TRAINER.MAPLE.PREC``, ...).
"""

from typing import Any

from yacs.config import CfgNode as CN

from anchoropt.config import get_default_config, register_config_node

#: Keys of a baseline's node that an AnchorOPT trainer takes from ``TRAINER.ANCHOROPT`` instead.
SHADOWED_BASELINE_KEYS = ("N_CTX", "CTX_INIT")


@register_config_node
def add_anchoropt_config(cfg) -> None:
    c = cfg.TRAINER.ANCHOROPT = CN()
    # No effect (the official code defines it and never reads it either); accepted so that command lines of the
    # official scripts load. Whether AnchorOPT runs is the trainer's choice (--trainer <Baseline>_AnchorOPT).
    c.USE_ANCHOROPT = False
    # Stage II prompt: M soft tokens V and N anchor tokens A, placed by the position matrix.
    c.N_CTX = 4
    c.CTX_INIT = ""  # words to initialise V (random N(0, 0.02^2) when empty, as in the paper)
    c.ANCHOR_LEN = 1
    # learned: row-wise hard Gumbel-Softmax, straight-through (the paper's formulation; a source token may fill
    # several slots or none); sinkhorn: always a permutation; identity, anchor_front, anchor_middle, anchor_end: fixed.
    c.POSITION_MODE = "learned"
    c.GUMBEL_TEMP = 1.0  # tau of the Gumbel-Softmax (learned) / Gumbel-Sinkhorn (sinkhorn) sample in training
    c.SINKHORN_ITERS = 20
    # Stage II loss: PROMPT_CE_WEIGHT * CE + KD_WEIGHT * T^2 * KL(p_ens || p_normal) / (B * C).
    c.PROMPT_CE_WEIGHT = 1.0
    c.KD_WEIGHT = 1.0
    c.KD_TEMPERATURE = 1.0
    # Stage II inference. auto: per evaluation set, as the official code per split: every evaluated class was
    # trained on (base test, ImageNet variants) -> the learned prompt; otherwise (new, all, cross-dataset) -> the
    # ensemble (learned + anchor prompt) / 2 for every class. per_class: mixed by class name in one evaluation
    # (trained names: learned prompt; others: ensemble). normal, ensemble, anchor: one rule for analysis.
    c.SCORING_MODE = "auto"
    # Stage I output read by Stage II: an anchor file, a Stage I output directory or a released anchor.
    c.ANCHOR_PATH = ""
    # Stage I: MSE to LLM descriptions (+ image CE on the anchor prompt). Recipes: configs/trainers/AnchorOPT_StageI/
    # released.yaml (the released anchors: CE 1.0 except ImageNet) and mse_only.yaml (the paper / public script).
    c.ANCHOR_MSE_WEIGHT = 1000.0
    c.ANCHOR_CE_WEIGHT = 0.0
    c.MAX_TEMPLATE_LENGTH = 10  # descriptions used per class
    c.DESCRIPTIONS = ""  # CuPL-format JSON; empty: the dataset's file under descriptions/
    # Reproduce the official algorithm: normal prompt read at EOT - ANCHOR_LEN (the "."), Gumbel noise at test time;
    # MaPLe: the anchor's hidden state read one position early with a hard index; CoCoOp: Θ and the meta-net frozen.
    c.LEGACY = False


def ignored_setting_warnings(cfg: Any, baseline_node: str, trainer_name: str) -> list[str]:
    """Messages for settings an AnchorOPT trainer does not use although they were set.

    ``TRAINER.<baseline>.N_CTX`` / ``CTX_INIT`` (``baseline_node``, e.g. ``COOP``) changed from their defaults:
    the soft tokens come from ``TRAINER.ANCHOROPT.N_CTX`` / ``CTX_INIT``. ``USE_ANCHOROPT`` has no effect.
    """
    messages = []
    defaults = get_default_config().TRAINER
    node, default_node = cfg.TRAINER.get(baseline_node), defaults.get(baseline_node) or {}
    for key in SHADOWED_BASELINE_KEYS if node is not None else ():
        value, default, used = node.get(key), default_node.get(key), cfg.TRAINER.ANCHOROPT[key]
        if key in node and value != default and value != used:
            messages.append(
                f"TRAINER.{baseline_node}.{key}={value!r} is ignored by {trainer_name}: its soft tokens come from "
                f"TRAINER.ANCHOROPT.{key} ({used!r}); set that key instead"
            )
    if cfg.TRAINER.ANCHOROPT.USE_ANCHOROPT:
        messages.append(
            "TRAINER.ANCHOROPT.USE_ANCHOROPT has no effect (as in the official code): the trainer decides "
            f"(--trainer {trainer_name})"
        )
    return messages
