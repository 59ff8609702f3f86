"""Splitting a solution into reasoning steps: steps end at a blank line ("\n\n")."""

from __future__ import annotations

from ttscale.engine.types import Sample

STEP_SEPARATOR = "\n\n"


def split_steps(text: str) -> list[str]:
    """Non-empty steps of `text`, stripped; a text without separators is one step."""
    return [step.strip() for step in text.split(STEP_SEPARATOR) if step.strip()]


def ends_solution(step: Sample) -> bool:
    """Whether a sampled step ends its solution: it did not stop at the separator (end
    of sequence, or its token limit), or it writes a boxed answer (in its answer part: a
    reasoning model's boxed draft inside its thoughts does not end it)."""
    return step.stop_reason != STEP_SEPARATOR or "\\boxed" in step.answer_text
