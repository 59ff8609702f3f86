"""Final-answer extraction from a model's solution text: what a careful grader reads.

Rules, in order:

1. Boxes (`\\boxed{...}`, `\\fbox{...}`, `\\boxed 5`), nested braces allowed. A box that
   never closes means the solution was cut off mid-answer: no answer.
2. The answer is the last box, together with the boxes just before it that belong to
   the same answer: boxes separated only by connectives (commas, "and", "or", `x =`,
   math delimiters), or boxes that each give a value of the same variable
   (`x=\\boxed{2}` ... `x=\\boxed{3}`), with no correction word between them. Such boxes
   are read as one list, "2, 3" (repeated values once). Otherwise earlier boxes were
   intermediate results: `first \\boxed{1} then \\boxed{2}` answers 2.
3. A correction after the last box overrides it: when a correction word ("wait",
   "actually", "I forgot", "mistake", ...) follows the last box and is itself followed
   by an explicit "the answer is X", the answer is X (`\\boxed{48}. Wait, I forgot the
   half ... the answer is 24` answers 24). A correction without a new stated answer
   leaves the box standing: it is the only answer the text commits to.
4. Without boxes: the last GSM8K `#### X` mark, else the last "the (final) answer is X"
   sentence, else (when `numeric_fallback`) the last number in the text.

Pure string work: cheap enough for the event loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ANSWER_CHARS = 500
"""Longer "answers" are not answers (runaway generations); they extract to None."""

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_IS = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|should be|would be|:)\s*"
    r"(?:actually\s+)?[:\s]*(.+?)"
    r"(?:\.\s|\.$|\n|$|,?\s+(?:since|because|as|which|so that|for)\b)",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_GSM8K_MARK = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)
_CORRECTION = re.compile(
    r"\b(?:wait|actually|oops|hold on|i forgot|i made an? (?:error|mistake)|mistake|"
    r"correction|on second thought|let me re-?check|that'?s (?:wrong|not right|incorrect))\b",
    re.IGNORECASE,
)
_CONNECTIVE = re.compile(
    r"(?:\\text\{[^{}]*\}|\\quad|\\qquad|\\[,;!]|\\\(|\\\)|\\\[|\\\]|[$,;.:\s]|\band\b|\bor\b|"
    r"[A-Za-z](?:_\{?\w+\}?)?\s*=)+",
    re.IGNORECASE,
)
_ASSIGNED = re.compile(r"(?<![A-Za-z\\])([A-Za-z](?:_\{?\w+\}?)?)\s*=\s*[$\\(\[]*\s*$")
_MAX_LINK_GAP = 400


@dataclass(frozen=True)
class Box:
    start: int
    end: int  # index just past the closing brace
    content: str


_BRACE = re.compile(r"[{}]")


def _closing_braces(text: str) -> dict[int, int]:
    """The index of the matching `}` for every `{` that closes (one pass over the braces
    alone: a solution of thousands of characters has a few, and this runs per sample)."""
    closing, stack = {}, []
    for match in _BRACE.finditer(text):
        if match.group() == "{":
            stack.append(match.start())
        elif stack:
            closing[stack.pop()] = match.start()
    return closing


def _box_at(text: str, start: int, closing: dict[int, int]) -> Box | None:
    """The box whose command starts at `start`; None when it never closes."""
    index = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
    while index < len(text) and text[index] == " " and text[index + 1 : index + 2] in " {":
        index += 1
    if index >= len(text):
        return None
    if text[index] == " ":  # "\boxed 5" form
        end = text.find("$", index + 1)
        end = len(text) if end < 0 else end
        stripped = text[index + 1 : end].strip()
        return Box(start, end, stripped) if stripped else None
    if text[index] != "{" or index not in closing:
        return None  # unbalanced braces
    return Box(start, closing[index] + 1, text[index + 1 : closing[index]].strip())


def find_boxes(text: str) -> list[Box] | None:
    """Every box in order of position; None when the last one never closes."""
    starts = sorted(
        match.start()
        for command in _BOX_COMMANDS
        for match in re.finditer(re.escape(command) + r"(?![A-Za-z])", text)
    )
    closing = _closing_braces(text) if starts else {}
    boxes: list[Box] = []
    for start in starts:
        if boxes and start < boxes[-1].end:
            continue  # a box inside a box is part of it
        box = _box_at(text, start, closing)
        if box is None:
            if start == starts[-1]:
                return None
            continue
        boxes.append(box)
    return boxes


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}`/`\\fbox{...}`; None if absent or unbalanced."""
    boxes = find_boxes(text)
    return boxes[-1].content if boxes else None


def _variable(text: str, box: Box) -> str | None:
    """The variable a box gives a value of: `x=\\boxed{2}` or `\\boxed{x=2}`."""
    before = _ASSIGNED.search(text[max(0, box.start - 20) : box.start])
    if before:
        return before.group(1)
    inside = re.match(r"([A-Za-z](?:_\{?\w+\}?)?)\s*=(?!=)", box.content)
    return inside.group(1) if inside else None


def _linked(text: str, earlier: Box, later: Box) -> bool:
    """Do two consecutive boxes give parts of one answer (rule 2)?"""
    gap = text[earlier.end : later.start]
    if len(gap) > _MAX_LINK_GAP or _CORRECTION.search(gap):
        return False
    if not gap.strip() or _CONNECTIVE.fullmatch(gap):
        return True
    variable = _variable(text, later)
    return variable is not None and variable == _variable(text, earlier)


def _final_boxes(text: str, boxes: list[Box]) -> str:
    """The last box and the boxes linked to it, as one comma-separated list."""
    chosen = [boxes[-1]]
    for earlier in reversed(boxes[:-1]):
        if not _linked(text, earlier, chosen[0]):
            break
        chosen.insert(0, earlier)
    contents = list(dict.fromkeys(box.content for box in chosen))
    return ", ".join(contents)


def _correction_after(text: str, last: Box) -> str | None:
    """An answer restated after a correction that follows the last box (rule 3)."""
    tail = text[last.end :]
    correction = _CORRECTION.search(tail)
    if correction is None:
        return None
    restated = _ANSWER_IS.findall(tail[correction.end() :])
    return restated[-1] if restated else None


def _strip_wrappers(answer: str) -> str:
    answer = answer.strip().strip("$").strip()
    answer = answer.removeprefix("\\(").removesuffix("\\)").strip()
    answer = answer.removeprefix("\\[").removesuffix("\\]").strip()
    if answer.endswith("."):
        answer = answer[:-1].rstrip()
    return answer


def _unboxed_answer(text: str, numeric_fallback: bool) -> str | None:
    """Rule 4: the GSM8K mark, an "answer is" sentence, the last number."""
    marked = _GSM8K_MARK.findall(text)
    if marked:
        return marked[-1]
    sentences = _ANSWER_IS.findall(text)
    if sentences:
        return sentences[-1]
    if numeric_fallback:
        numbers = _NUMBER.findall(text)
        return numbers[-1].replace(",", "") if numbers else None
    return None


def extract_answer(text: str, *, numeric_fallback: bool = True) -> str | None:
    """The final answer of a solution, or None when there is none (or it is absurd)."""
    if not text:
        return None
    boxes = find_boxes(text)
    if boxes is None:
        return None  # a box that never closes: the solution was cut off mid-answer
    if boxes:
        candidate = _correction_after(text, boxes[-1]) or _final_boxes(text, boxes)
    else:
        candidate = _unboxed_answer(text, numeric_fallback)
    if candidate is None:
        return None
    candidate = _strip_wrappers(candidate)
    if not candidate or len(candidate) > MAX_ANSWER_CHARS:
        return None
    return candidate
