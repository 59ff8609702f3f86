"""Final-answer extraction from a model's solution text.

Order of preference: the last `\\boxed{...}` (or `\\fbox{...}`), with nested braces;
then an explicit "the (final) answer is ..." sentence; then, for GSM8K-style answers,
the last number in the text. Pure string work: cheap enough for the event loop.
"""

from __future__ import annotations

import re

MAX_ANSWER_CHARS = 500
"""Longer "answers" are not answers (runaway generations); they extract to None."""

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_IS = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|:)\s*[:\s]*(.+?)(?:\.\s|\.$|\n|$)",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_GSM8K_MARK = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}`/`\\fbox{...}`; None if absent or unbalanced."""
    best_start = -1
    for command in _BOX_COMMANDS:
        best_start = max(best_start, text.rfind(command))
    if best_start < 0:
        return None
    index = best_start
    while index < len(text) and text[index] not in "{ ":
        index += 1
    if index >= len(text):
        return None
    if text[index] == " ":  # "\boxed 5" form
        rest = text[index + 1 :].split("$")[0].strip()
        return rest or None
    depth = 0
    for end in range(index, len(text)):
        char = text[end]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[index + 1 : end].strip()
    return None  # unbalanced braces


def _strip_wrappers(answer: str) -> str:
    answer = answer.strip().strip("$").strip()
    answer = answer.removeprefix("\\(").removesuffix("\\)").strip()
    answer = answer.removeprefix("\\[").removesuffix("\\]").strip()
    if answer.endswith("."):
        answer = answer[:-1].rstrip()
    return answer


def extract_answer(text: str, *, numeric_fallback: bool = True) -> str | None:
    """The final answer of a solution, or None when there is none (or it is absurd)."""
    if not text:
        return None
    candidate = extract_boxed(text)
    if candidate is None and any(command in text for command in _BOX_COMMANDS):
        return None  # a box that never closes: the solution was cut off mid-answer
    if candidate is None:
        marked = _GSM8K_MARK.findall(text)
        candidate = marked[-1] if marked else None
    if candidate is None:
        sentences = _ANSWER_IS.findall(text)
        candidate = sentences[-1] if sentences else None
    if candidate is None and numeric_fallback:
        numbers = _NUMBER.findall(text)
        candidate = numbers[-1].replace(",", "") if numbers else None
    if candidate is None:
        return None
    candidate = _strip_wrappers(candidate)
    if not candidate or len(candidate) > MAX_ANSWER_CHARS:
        return None
    return candidate
