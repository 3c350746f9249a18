"""MaPLe + AnchorOPT: the position matrix applied at the input and at every prompted deeper layer.

Input layer: the text context is ``Z = P·[V; A]`` (AnchorOPT's normal prompt). Deeper layer i
(1 <= i < depth): slots 1..M+N are replaced by ``P·[V_i; h_A]``, where ``V_i`` is MaPLe's
compound prompt of that layer and ``h_A`` the anchor's hidden state leaving layer i-1, read
at the slot where P placed it (slot j sits at sequence position 1+j, SOS being at 0). When no
slot holds an anchor token, ``P·[V_i; h_A]`` takes nothing from it: the soft tokens alone.
``LEGACY`` reads ``h_A`` as the official code does: at position j (one early; slot 0 reads SOS)
and with a hard index, so no gradient reaches Θ through the read (it still reaches Θ through P's
product with ``[V_i; h_A]``).
Vision prompts are MaPLe's projections of V and V_i. The anchor branch ("[A] of <class>.")
runs through the unprompted CLIP, text and image.

The model follows the contract `anchoropt.models.stage2_base.Stage2Model` (``prompt_learner``,
``classnames``/``set_classnames``, ``anchor_text_features``, ``prompt_state``,
``branch_logits``, ``PROMPTS_FIXED_IN_EVAL``), so the Stage II trainer logic is shared.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from clip.model import CLIP

from anchoropt.method.positions import apply_positions
from anchoropt.models.clip_parts import ImageEncoder, scaled_logits
from anchoropt.models.deep_prompts import DeepSlots
from anchoropt.models.maple import CompoundPrompts, MaPLeCLIP, TextPrompts
from anchoropt.models.stage2_base import AnchorBranch, AnchorOPTPromptLearner


def carried_anchor_state(
    hidden: torch.Tensor, matrix: torch.Tensor, num_ctx: int, slot_start: int = 1, hard: bool = False
) -> torch.Tensor:
    """The anchor tokens' hidden states [batch, N, width] read from ``hidden`` [batch, seq, width].

    Anchor token k is read at position ``slot_start + j`` for the first slot j that P
    (``matrix`` [K, K], rows = slots, columns = sources [V; A]) fills with it; a token no
    slot holds reads zeros (P then never uses it). By default the read is a product with P's
    entries, so the straight-through gradient of P also flows through it; ``hard=True`` reads
    with a detached one-hot index (the official code's hard index: no gradient to Θ through the read).
    """
    slots = matrix.shape[-1]
    anchor_columns = matrix[:, num_ctx:]  # [K, N]
    # argmax finds the first slot holding each token; the official code tests ``== 1.0`` on the
    # straight-through sample, which rounding can miss. A token no slot holds has an all-zero column.
    first = F.one_hot(anchor_columns.detach().argmax(dim=0), slots).t().to(anchor_columns.dtype)  # [K, N]
    pick = first * (anchor_columns.detach() > 0.5) if hard else anchor_columns * first
    return torch.einsum("kn,bkd->bnd", pick.to(hidden.dtype), hidden[:, slot_start : slot_start + slots])


def anchor_carrying_slots(
    matrix: torch.Tensor,
    soft: torch.Tensor,
    hidden: torch.Tensor,
    num_ctx: int,
    slot_start: int = 1,
    hard: bool = False,
) -> torch.Tensor:
    """``P·[V_i; h_A]`` per sequence: [batch, K, width] for the layer's soft tokens ``soft`` [M, width]."""
    anchor_state = carried_anchor_state(hidden, matrix, num_ctx, slot_start, hard)
    soft = soft.to(hidden.dtype).expand(hidden.shape[0], -1, -1)
    return apply_positions(matrix, torch.cat([soft, anchor_state], dim=1))


class MaPLeAnchorOPTPromptLearner(CompoundPrompts, AnchorOPTPromptLearner):
    """AnchorOPT's V (``ctx``), A (``anchor``) and Θ (``positions``) plus MaPLe's compound prompts and projections.

    Keyword arguments are `AnchorOPTPromptLearner`'s, plus ``prompt_depth`` and
    ``vision_prompts``. The vision prompts come from V only (M tokens), as in the official code.
    """

    def __init__(
        self,
        clip_model: CLIP,
        classnames: Sequence[str],
        n_ctx: int,
        anchor_len: int,
        prompt_depth: int = 9,
        vision_prompts: bool = True,
        **anchoropt_options,
    ) -> None:
        super().__init__(clip_model, classnames, n_ctx, anchor_len, **anchoropt_options)
        self.init_compound_prompts(clip_model, prompt_depth, vision_prompts)
        print(f"MaPLe + AnchorOPT: prompt depth {prompt_depth}, position matrix applied at every prompted text layer")

    def deep_text_slots(self, matrix: torch.Tensor) -> DeepSlots | None:
        """Slots 1..M+N of each deeper prompted layer: ``P·[V_i; h_A]`` with the anchor state carried."""
        if self.prompt_depth <= 1:
            return None

        # LEGACY: the official read, one position early (0-based slot index into the sequence) and hard.
        read_start = 0 if self.legacy else 1

        def provide(layer: int, hidden: torch.Tensor) -> torch.Tensor | None:
            soft = self.compound_text(layer)
            if soft is None:
                return None
            return anchor_carrying_slots(matrix, soft, hidden, self.n_ctx, read_start, hard=self.legacy)

        return DeepSlots(start=1, provider=provide)

    def text_prompts(self, matrix: torch.Tensor | None = None) -> TextPrompts:
        """The normal prompt with one P (a fresh sample in training unless ``matrix`` is given) for every layer."""
        matrix = self.positions() if matrix is None else matrix
        embeds = self.layout.assemble(self.arrange(matrix=matrix))
        return TextPrompts(
            embeds=embeds, eot_index=self.readout_index, length=self.layout.length, deep=self.deep_text_slots(matrix)
        )


class MaPLeAnchorOPTCLIP(AnchorBranch, MaPLeCLIP):
    """Normal branch: the MaPLe-prompted CLIP; anchor branch: the unprompted CLIP (text and image)."""

    PROMPTS_FIXED_IN_EVAL = True

    def __init__(self, clip_model: CLIP, prompt_learner: MaPLeAnchorOPTPromptLearner) -> None:
        super().__init__(clip_model, prompt_learner)
        self.plain_image_encoder = ImageEncoder(clip_model)

    def prompt_state(self) -> torch.Tensor:
        """Normalised normal-prompt class features [C, e] (draws P once)."""
        return self.text_features()

    def branch_logits(
        self, image: torch.Tensor, prompt_state: torch.Tensor | None = None, anchor_text: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        text = self.prompt_state() if prompt_state is None else prompt_state
        normal = scaled_logits(self.image_features(image), text, self.logit_scale)
        if anchor_text is None:
            return normal, None
        with torch.no_grad():  # nothing learned reaches the anchor branch
            plain = self.plain_image_encoder(image)
        return normal, self.anchor_logits(plain, anchor_text)
