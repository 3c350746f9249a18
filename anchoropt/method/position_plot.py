"""Heatmap of a position matrix (the paper's Figure 4), drawn with PIL only.

Rows are slots (the arranged context, left to right in the prompt), columns
are sources (V1..VM, A1..AN); cell (s, j) shows P[s, j]. The source each slot
takes is outlined, a colour bar gives the scale, and the chosen order is
written underneath.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from anchoropt.method.positions import order_text, slot_sources, source_labels

LOW_COLOUR = (255, 255, 255)
HIGH_COLOUR = (8, 48, 107)
CHOSEN_COLOUR = (230, 97, 1)  # orange: stands out on both ends of the blue scale
FONT_SIZE = 15
OUTLINE = 3


@dataclass(frozen=True)
class HeatmapLayout:
    slots: int
    cell: int = 64
    left: int = 96  # room for row labels and the axis name
    top: int = 84  # room for the title, the axis name and the column labels
    bottom: int = 64  # room for the order text and the legend
    right: int = 110  # room for the colour bar

    @property
    def size(self) -> tuple[int, int]:
        width = max(self.left + self.slots * self.cell + self.right, 560)
        return width, self.top + self.slots * self.cell + self.bottom

    def cell_box(self, slot: int, source: int) -> tuple[int, int, int, int]:
        x0 = self.left + source * self.cell
        y0 = self.top + slot * self.cell
        return x0, y0, x0 + self.cell, y0 + self.cell

    def colour_bar(self) -> tuple[int, int, int, int]:
        x0 = self.left + self.slots * self.cell + 28
        return x0, self.top, x0 + 18, self.top + self.slots * self.cell


def _font(size: int = FONT_SIZE) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font only
        return ImageFont.load_default()


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
    font, small = _font(), _font(FONT_SIZE - 3)
    labels = source_labels(num_ctx, anchor_len)
    black = (0, 0, 0)
    grid_bottom = layout.top + slots * layout.cell

    draw.text((8, 8), title, fill=black, font=font)
    draw.text((layout.left, 34), "source (column)", fill=black, font=small)
    draw.text((8, layout.top - 20), "slot (row)", fill=black, font=small)
    for source, label in enumerate(labels):
        x0, _, x1, _ = layout.cell_box(0, source)
        draw.text(((x0 + x1) // 2, layout.top - 6), label, fill=black, font=font, anchor="ms")
    for slot in range(slots):
        _, y0, _, y1 = layout.cell_box(slot, 0)
        draw.text((layout.left - 8, (y0 + y1) // 2), f"slot {slot + 1}", fill=black, font=font, anchor="rm")
        for source in range(slots):
            value = float(values[slot, source])
            box = layout.cell_box(slot, source)
            draw.rectangle(box, fill=_colour(value), outline=(200, 200, 200))
            ink = (255, 255, 255) if value > 0.5 else black
            draw.text(
                ((box[0] + box[2]) // 2, (box[1] + box[3]) // 2),
                f"{float(matrix[slot, source]):.2f}",
                fill=ink,
                font=font,
                anchor="mm",
            )

    chosen_matrix = order_matrix if order_matrix is not None else matrix
    for slot, source in enumerate(slot_sources(chosen_matrix)):
        x0, y0, x1, y1 = layout.cell_box(slot, source)
        draw.rectangle((x0 + 1, y0 + 1, x1 - 1, y1 - 1), outline=CHOSEN_COLOUR, width=OUTLINE)

    _draw_colour_bar(draw, layout, matrix, small)
    order = order_text(chosen_matrix, num_ctx, anchor_len)
    draw.text((8, grid_bottom + 12), f"order: {order}", fill=black, font=font)
    draw.rectangle((8, grid_bottom + 38, 22, grid_bottom + 52), outline=CHOSEN_COLOUR, width=OUTLINE)
    draw.text((30, grid_bottom + 38), "the source each slot takes", fill=black, font=small)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def _draw_colour_bar(draw: ImageDraw.ImageDraw, layout: HeatmapLayout, matrix: torch.Tensor, font) -> None:
    """A vertical scale, high values on top, labelled with the values the colours stand for."""
    x0, y0, x1, y1 = layout.colour_bar()
    for y in range(y0, y1):
        draw.line((x0, y, x1, y), fill=_colour(1 - (y - y0) / max(y1 - y0 - 1, 1)))
    draw.rectangle((x0, y0, x1, y1), outline=(120, 120, 120))
    matrix = matrix.detach().float().cpu()
    low, high = float(matrix.min()), float(matrix.max())
    if low >= 0 and high <= 1:  # shown as they are (see _scaled)
        low, high = 0.0, 1.0
    for fraction in (0.0, 0.5, 1.0):
        y = round(y1 - fraction * (y1 - y0))
        draw.line((x1, y, x1 + 4, y), fill=(0, 0, 0))
        draw.text((x1 + 7, y), f"{low + fraction * (high - low):.2f}", fill=(0, 0, 0), font=font, anchor="lm")
