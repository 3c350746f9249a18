"""``TRAINER.ANCHOROPT``: the settings every AnchorOPT trainer shares (Stage I and all Stage II variants).

Key names of the published scripts are kept; precision comes from each
baseline's own node (``TRAINER.COOP.PREC``, ``TRAINER.MAPLE.PREC``, ...).
"""

from yacs.config import CfgNode as CN

from anchoropt.config import register_config_node


@register_config_node
def add_anchoropt_config(cfg) -> None:
    c = cfg.TRAINER.ANCHOROPT = CN()
    c.USE_ANCHOROPT = False  # accepted for compatibility with the official scripts; trainers decide
    # Stage II prompt: M soft tokens V and N anchor tokens A, placed by the position matrix.
    c.N_CTX = 4
    c.CTX_INIT = ""  # words to initialise V (random N(0, 0.02^2) when empty, as in the paper)
    c.ANCHOR_LEN = 1
    c.POSITION_MODE = "learned"  # learned, sinkhorn, identity, anchor_front, anchor_middle, anchor_end
    c.GUMBEL_TEMP = 1.0
    c.SINKHORN_ITERS = 20
    # Stage II loss: PROMPT_CE_WEIGHT * CE + KD_WEIGHT * T^2 * KL(p_ens || p_normal) / (B * C).
    c.PROMPT_CE_WEIGHT = 1.0
    c.KD_WEIGHT = 1.0
    c.KD_TEMPERATURE = 1.0
    # Stage II inference: auto (seen classes: normal prompt, unseen: ensemble), normal, ensemble, anchor.
    c.SCORING_MODE = "auto"
    # Stage I output read by Stage II: an anchor file, a Stage I output directory or a released anchor.
    c.ANCHOR_PATH = ""
    # Stage I: MSE to LLM descriptions (+ optional image CE on the anchor prompt).
    c.ANCHOR_MSE_WEIGHT = 1000.0
    c.ANCHOR_CE_WEIGHT = 0.0
    c.MAX_TEMPLATE_LENGTH = 10  # descriptions used per class
    c.DESCRIPTIONS = ""  # CuPL-format JSON; empty: the dataset's file under descriptions/
    # Reproduce the official code's faults 1-3 (read-out at ".", row-wise sampling, noise at test time).
    c.LEGACY = False
