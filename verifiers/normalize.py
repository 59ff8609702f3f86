"""Cheap string canonicalisation of math answers, the fast path of grouping.

Answers with the same normalised string are equivalent without asking sympy; only
answers whose strings differ go to `math-verify`. The rules only remove notation that
never changes the value (spacing, `\\left`/`\\right`, `\\dfrac`, `\\text{}` wrappers, a
trailing period, thousands separators in plain integers, degree marks).
"""

from __future__ import annotations

import re

_REMOVALS = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\quad", "\\displaystyle")
_THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+$")
_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_DEGREES = re.compile(r"\^\{?\\circ\}?")


def normalize_answer(answer: str) -> str:
    text = answer.strip()
    for token in _REMOVALS:
        text = text.replace(token, "")
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = _TEXT.sub(r"\1", text)
    text = _DEGREES.sub("", text).replace("°", "")
    text = "".join(text.split())
    text = text.rstrip(".")
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    if re.fullmatch(r"-?\d+\.\d*?0+", text):
        text = text.rstrip("0").rstrip(".")
    if re.fullmatch(r"-?0+\d+", text):
        sign = "-" if text.startswith("-") else ""
        text = sign + (text.lstrip("-").lstrip("0") or "0")
    return text
