"""Prompt learners and CLIP wrappers used by the trainers (no Dassl dependency)."""
