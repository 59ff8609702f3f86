"""Splitting a solution into reasoning steps: steps end at a blank line ("\n\n")."""

from __future__ import annotations

STEP_SEPARATOR = "\n\n"


def split_steps(text: str) -> list[str]:
    """Non-empty steps of `text`, stripped; a text without separators is one step."""
    return [step.strip() for step in text.split(STEP_SEPARATOR) if step.strip()]
