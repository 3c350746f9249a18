"""Prompt building blocks: token layouts with learnable slots, and context initialisation."""

from anchoropt.prompts.context import ContextInit, init_context
from anchoropt.prompts.layout import (
    ANCHOR_TEMPLATE,
    CLASS_TOKEN_POSITION_TEMPLATES,
    PromptLayout,
    encode_words,
    render_prompt,
    template_for_position,
)

__all__ = [
    "ANCHOR_TEMPLATE",
    "CLASS_TOKEN_POSITION_TEMPLATES",
    "ContextInit",
    "PromptLayout",
    "encode_words",
    "init_context",
    "render_prompt",
    "template_for_position",
]
