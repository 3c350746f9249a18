"""Heatmap of a position matrix (the paper's Figure 4), drawn with PIL only.

Rows are slots (the arranged context, left to right in the prompt), columns
are sources (V1..VM, A1..AN); cell (s, j) shows P[s, j]. The chosen order is
written underneath.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from anchoropt.method.positions import order_text, source_labels

LOW_COLOUR = (255, 255, 255)
HIGH_COLOUR = (8, 48, 107)


@dataclass(frozen=True)
class HeatmapLayout:
    slots: int
    cell: int = 44
    left: int = 64  # room for row labels
    top: int = 48  # room for the title and column labels
    bottom: int = 40  # room for the order text
    right: int = 16

    @property
    def size(self) -> tuple[int, int]:
        width = max(self.left + self.slots * self.cell + self.right, 320)
        return width, self.top + self.slots * self.cell + self.bottom

    def cell_box(self, slot: int, source: int) -> tuple[int, int, int, int]:
        x0 = self.left + source * self.cell
        y0 = self.top + slot * self.cell
        return x0, y0, x0 + self.cell, y0 + self.cell


def _colour(value: float) -> tuple[int, int, int]:
    return tuple(round(low + (high - low) * value) for low, high in zip(LOW_COLOUR, HIGH_COLOUR))


def _scaled(matrix: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1]: probabilities/one-hot as they are, anything else min-max scaled."""
    matrix = matrix.detach().float().cpu()
    low, high = float(matrix.min()), float(matrix.max())
    if low >= 0 and high <= 1:
        return matrix
    return (matrix - low) / (high - low) if high > low else torch.zeros_like(matrix)


def render_position_matrix(
    matrix: torch.Tensor,
    path: str | Path,
    num_ctx: int,
    anchor_len: int,
    title: str = "position matrix: row = slot, column = source it takes",
    order_matrix: torch.Tensor | None = None,
) -> Path:
    """Write a PNG heatmap of `matrix` [K, K]; the order line is read from
    `order_matrix` (e.g. the deterministic P) or else from `matrix` itself."""
    slots = num_ctx + anchor_len
    if tuple(matrix.shape) != (slots, slots):
        raise ValueError(
            f"matrix must be {slots}x{slots} for N_CTX={num_ctx}, ANCHOR_LEN={anchor_len}, got {tuple(matrix.shape)}"
        )
    layout = HeatmapLayout(slots)
    values = _scaled(matrix)
    image = Image.new("RGB", layout.size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    labels = source_labels(num_ctx, anchor_len)

    draw.text((layout.left, 6), title, fill=(0, 0, 0), font=font)
    for source, label in enumerate(labels):
        x0, _, x1, _ = layout.cell_box(0, source)
        draw.text(((x0 + x1) // 2, layout.top - 6), label, fill=(0, 0, 0), font=font, anchor="ms")
    for slot in range(slots):
        _, y0, _, y1 = layout.cell_box(slot, 0)
        draw.text((layout.left - 8, (y0 + y1) // 2), f"slot {slot + 1}", fill=(0, 0, 0), font=font, anchor="rm")
        for source in range(slots):
            value = float(values[slot, source])
            box = layout.cell_box(slot, source)
            draw.rectangle(box, fill=_colour(value), outline=(200, 200, 200))
            ink = (255, 255, 255) if value > 0.5 else (0, 0, 0)
            draw.text(
                ((box[0] + box[2]) // 2, (box[1] + box[3]) // 2),
                f"{float(matrix[slot, source]):.2f}",
                fill=ink,
                font=font,
                anchor="mm",
            )

    order = order_text(order_matrix if order_matrix is not None else matrix, num_ctx, anchor_len)
    draw.text((8, layout.top + slots * layout.cell + 14), f"order: {order}", fill=(0, 0, 0), font=font)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path
