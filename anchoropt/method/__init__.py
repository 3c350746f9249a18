"""AnchorOPT method pieces that need neither Dassl nor a trainer.

- `positions`: the position matrix P arranging soft tokens and anchors into slots.
- `losses`: Stage II loss (cross-entropy + distillation from the detached ensemble).
- `scoring`: per-class inference rule (seen classes: learned prompt; unseen: ensemble).
- `anchor_checkpoint` / `official_checkpoint`: Stage I anchors, incl. the released Dassl files.
- `descriptions` / `names`: CuPL-format class descriptions and class-name matching.
- `position_plot`: heatmap PNG of a position matrix.

Import the submodules directly; this package imports nothing on its own.
"""
