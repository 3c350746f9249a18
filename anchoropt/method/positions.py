"""The position matrix P that arranges soft tokens V and anchor tokens A into prompt slots.

Convention used everywhere in this module: the source stack is ``[V; A]``
(rows 0..M-1 are V1..VM, rows M..M+N-1 are A1..AN), and the arranged context
is ``Z = P @ [V; A]``. So row ``s`` of P describes slot ``s``: slot ``s`` is
filled by source ``argmax_j P[s, j]``.

Modes
-----
``learned`` (default; the paper's formulation, with or without LEGACY)
    Training: a fresh straight-through hard Gumbel-Softmax sample of the
    logits Θ, row by row (each slot picks a source independently, so a source
    may fill several slots or none; ``sinkhorn`` gives a permutation), at
    temperature ``tau`` (``GUMBEL_TEMP``). Evaluation: one-hot(argmax Θ) per
    row, deterministic.
``sinkhorn``
    Training: Gumbel-Sinkhorn relaxation of (Θ + Gumbel noise)/τ, with the
    forward pass using the Hungarian (linear-assignment) permutation of that
    relaxation and gradients flowing through the relaxation (straight-through).
    Evaluation: the Hungarian permutation of Θ. Always a true permutation.
``identity`` / ``anchor_end``
    P = I, i.e. Z = [V; A]: soft tokens first, anchors last.
``anchor_front``
    Z = [A; V].
``anchor_middle``
    Z = [V1..V_h; A; V_{h+1}..V_M] with h = ceil(M/2): for M=4 "V1 V2 A1 V3 V4",
    for M=5 "V1 V2 V3 A1 V4 V5", for M=1 the anchor comes last.

``legacy=True`` reproduces the official code for users matching released
numbers: evaluation samples exactly like training (a random hard
Gumbel-Softmax in ``learned`` mode), so test-time results are random.
Fixed orders have no randomness and ignore the switch.
"""

import math

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from anchoropt.errors import ConfigError

POSITION_MODES = ("learned", "sinkhorn", "identity", "anchor_front", "anchor_middle", "anchor_end")
TRAINABLE_MODES = ("learned", "sinkhorn")

MODE_KEY = "TRAINER.ANCHOROPT.POSITION_MODE"
GUMBEL_TEMP_KEY = "TRAINER.ANCHOROPT.GUMBEL_TEMP"
SINKHORN_ITERS_KEY = "TRAINER.ANCHOROPT.SINKHORN_ITERS"


def fixed_order(mode: str, num_ctx: int, anchor_len: int) -> list[int]:
    """Source index for each slot under a fixed (non-learned) mode."""
    soft = list(range(num_ctx))
    anchors = list(range(num_ctx, num_ctx + anchor_len))
    if mode in ("identity", "anchor_end"):
        return soft + anchors
    if mode == "anchor_front":
        return anchors + soft
    if mode == "anchor_middle":
        half = math.ceil(num_ctx / 2)
        return soft[:half] + anchors + soft[half:]
    raise ConfigError(
        f"{MODE_KEY}: '{mode}' is not a fixed order (expected one of identity, anchor_front, anchor_middle, anchor_end)"
    )


def order_matrix(order: list[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Matrix P with P[s, order[s]] = 1."""
    matrix = torch.zeros(len(order), len(order), dtype=dtype)
    matrix[torch.arange(len(order)), torch.tensor(order, dtype=torch.long)] = 1
    return matrix


def sample_gumbel_like(tensor: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise; the exponential form never takes log(0)."""
    return -torch.empty_like(tensor).exponential_().log()


def sinkhorn_log(log_alpha: torch.Tensor, iterations: int) -> torch.Tensor:
    """Log of the (approximately) doubly-stochastic matrix reached by alternating
    row and column normalisation in log space."""
    for _ in range(iterations):
        log_alpha = log_alpha - torch.logsumexp(log_alpha, dim=-1, keepdim=True)
        log_alpha = log_alpha - torch.logsumexp(log_alpha, dim=-2, keepdim=True)
    return log_alpha


def hungarian_permutation(scores: torch.Tensor) -> torch.Tensor:
    """The permutation matrix maximising the summed scores (one source per slot, each used once)."""
    values = scores.detach().float().cpu().numpy()
    rows, cols = linear_sum_assignment(values, maximize=True)
    matrix = torch.zeros_like(scores)
    matrix[torch.as_tensor(rows, device=scores.device), torch.as_tensor(cols, device=scores.device)] = 1
    return matrix


def argmax_one_hot(logits: torch.Tensor) -> torch.Tensor:
    return F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(logits.dtype)


def apply_positions(matrix: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Z = P @ tokens for tokens of shape [K, d] or [..., K, d] (one P shared by the batch)."""
    slots = matrix.shape[-1]
    if tokens.dim() < 2 or tokens.shape[-2] != slots:
        raise ValueError(
            f"tokens must have shape [..., {slots}, d] to match a {slots}x{slots} position matrix, got "
            f"{tuple(tokens.shape)}"
        )
    return torch.matmul(matrix.to(dtype=tokens.dtype, device=tokens.device), tokens)


class PositionMatrix(nn.Module):
    """Produces the K×K position matrix (K = num_ctx + anchor_len) for the current mode.

    Θ is stored as the parameter ``logits`` (fp32, N(0, 1) init) only in trainable modes.
    """

    def __init__(
        self,
        num_ctx: int,
        anchor_len: int,
        mode: str = "learned",
        tau: float = 1.0,
        sinkhorn_iters: int = 20,
        legacy: bool = False,
    ) -> None:
        super().__init__()
        if mode not in POSITION_MODES:
            raise ConfigError(
                f"{MODE_KEY}: unknown position mode '{mode}' (expected one of {', '.join(POSITION_MODES)})"
            )
        if num_ctx < 0 or anchor_len < 0 or num_ctx + anchor_len < 1:
            raise ConfigError(f"position matrix needs at least one slot, got N_CTX={num_ctx}, ANCHOR_LEN={anchor_len}")
        if mode in TRAINABLE_MODES and not tau > 0:
            raise ConfigError(f"{GUMBEL_TEMP_KEY} must be > 0 for position mode '{mode}', got {tau}")
        if mode == "sinkhorn" and sinkhorn_iters < 1:
            raise ConfigError(f"{SINKHORN_ITERS_KEY} must be >= 1, got {sinkhorn_iters}")
        self.num_ctx = num_ctx
        self.anchor_len = anchor_len
        self.mode = mode
        self.tau = float(tau)
        self.sinkhorn_iters = int(sinkhorn_iters)
        self.legacy = bool(legacy)
        slots = num_ctx + anchor_len
        if mode in TRAINABLE_MODES:
            self.logits = nn.Parameter(torch.randn(slots, slots))
        else:
            self.register_parameter("logits", None)
            # Derived from the config, so it does not belong in checkpoints.
            self.register_buffer("fixed", order_matrix(fixed_order(mode, num_ctx, anchor_len)), persistent=False)

    @property
    def num_slots(self) -> int:
        return self.num_ctx + self.anchor_len

    @property
    def trainable(self) -> bool:
        return self.logits is not None

    def forward(self) -> torch.Tensor:
        if self.logits is None:
            return self.fixed
        if self.training or self.legacy:
            return self._sample()
        return self.deterministic()

    def _sample(self) -> torch.Tensor:
        if self.mode == "learned":
            return F.gumbel_softmax(self.logits, tau=self.tau, hard=True, dim=-1)
        log_soft = sinkhorn_log((self.logits + sample_gumbel_like(self.logits)) / self.tau, self.sinkhorn_iters)
        soft = log_soft.exp()
        return hungarian_permutation(log_soft) - soft.detach() + soft

    @torch.no_grad()
    def deterministic(self) -> torch.Tensor:
        """The evaluation-time matrix of the correct (non-legacy) behaviour, whatever the module's mode flag."""
        if self.logits is None:
            return self.fixed.clone()
        if self.mode == "learned":
            return argmax_one_hot(self.logits)
        return hungarian_permutation(self.logits)

    @torch.no_grad()
    def probabilities(self) -> torch.Tensor:
        """A soft view of Θ for plots: row softmax (learned) or Sinkhorn of Θ/τ (sinkhorn)."""
        if self.logits is None:
            return self.fixed.clone()
        if self.mode == "learned":
            return torch.softmax(self.logits / self.tau, dim=-1)
        return sinkhorn_log(self.logits / self.tau, self.sinkhorn_iters).exp()

    def arrange(self, tokens: torch.Tensor) -> torch.Tensor:
        """Z = P @ tokens with a freshly computed P (one sample per call, shared across any batch dims)."""
        return apply_positions(self(), tokens)

    def extra_repr(self) -> str:
        return (
            f"num_ctx={self.num_ctx}, anchor_len={self.anchor_len}, mode={self.mode}, tau={self.tau}, "
            f"legacy={self.legacy}"
        )


def slot_sources(matrix: torch.Tensor) -> list[int]:
    """For each slot s, the source row (0..K-1 of [V; A]) that fills it: argmax_j P[s, j]."""
    return [int(i) for i in matrix.detach().argmax(dim=-1).tolist()]


def source_slots(matrix: torch.Tensor) -> list[list[int]]:
    """For each source row j of [V; A], the slots it fills (empty if it vanished, several if repeated)."""
    placed: list[list[int]] = [[] for _ in range(matrix.shape[-1])]
    for slot, source in enumerate(slot_sources(matrix)):
        placed[source].append(slot)
    return placed


def anchor_slots(matrix: torch.Tensor, num_ctx: int, anchor_len: int) -> list[int | None]:
    """For each anchor token A_j, the first slot holding it, or None if no slot does.

    Slot indices are 0-based within the context; in a CLIP text sequence slot s
    sits at position 1 + s because SOS occupies position 0.
    """
    placed = source_slots(matrix)
    return [placed[num_ctx + j][0] if placed[num_ctx + j] else None for j in range(anchor_len)]


def source_labels(num_ctx: int, anchor_len: int) -> list[str]:
    """Display names of the source rows: V1..VM then A1..AN."""
    return [f"V{i + 1}" for i in range(num_ctx)] + [f"A{j + 1}" for j in range(anchor_len)]


def order_text(matrix: torch.Tensor, num_ctx: int, anchor_len: int) -> str:
    """The arranged context as text, e.g. "V1 A1 V2 V3 V4"; repeated sources show
    up repeated and sources no slot takes are listed as missing."""
    labels = source_labels(num_ctx, anchor_len)
    text = " ".join(labels[source] for source in slot_sources(matrix))
    missing = [labels[j] for j, slots in enumerate(source_slots(matrix)) if not slots]
    if missing:
        text += f" (missing: {' '.join(missing)})"
    return text
