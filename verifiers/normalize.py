"""Cheap string canonicalisation of math answers: the fast path of grading and grouping.

`normalize_answer` maps every spelling of an answer that differs only in notation to one
string; equal strings are equivalent without asking sympy, and the string is also what
the workers parse. Pure string work (linear regexes, length-capped), safe on the event
loop. The rules, each chosen so that it never changes the value the grader compares:

- Control and format characters (NUL, bidi marks, zero-width spaces) are dropped, so
  `"1\\x00\\u202e"` normalises to `"1"`: they are transport noise, never mathematics.
- Math delimiters and money signs go: `$`, `\\$`, `\\(`, `\\)`, `\\[`, `\\]`, an enclosing
  `\\boxed{}`. A dollar amount is its number: `\\$18.90` is `18.9`.
- Units are removed, never converted: a trailing `\\text{ cm}`/`\\mbox{dollars}` (any
  words after a number), bare unit words (`5 cm`), degree marks (`^\\circ`, `°`) and the
  percent sign. So `5\\text{ cm}` is `5`, `90^\\circ` is `90` and `50\\%` is `50` -- and
  not `0.5`: MATH and GSM8K golds state percentages as the number before the sign, and
  one rule for both directions keeps equivalence symmetric and transitive.
- `\\text{...}` around a whole answer is its content (`\\text{Evelyn}`), `\\text{ or }` and
  `\\text{ and }` between values are list commas, a lone `(C)` is the choice `C`.
- Number formatting: thousands separators (`32,\\!348`, `1,234`, `10{,}080`) go, as do
  trailing zeros after a decimal point and leading zeros (`18.90` -> `18.9`, `046` -> `46`).
- Repeating decimals become the exact fraction they denote: `0.\\overline{36}` is
  `{\\frac{36}{99}}` (= 4/11), `0.1\\overline{6}` is `{\\frac{15}{90}}` (= 1/6).
- A number with a base subscript keeps its base: `4210_5`, `4210_{5}` and `4210_{(5)}`
  all become `4210_{5}`, compared as the pair (digits, base) -- never as the decimal value
  (`555`, the question's own input, is not an answer in base 5), and never without the
  base (`4210_6` is another answer). `_{10}` is plain decimal.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

MAX_NORMALIZED_CHARS = 2_000
"""Longer strings are not answers: no rule runs on them (so no regex sees a megabyte);
they only lose invisible characters and whitespace, and compare as whole strings."""

_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u00d7": "\\times ", "\u00b7": "\\cdot ", "\u00f7": "\\div ",
    "\u03c0": "\\pi ", "\u221e": "\\infty ", "\u221a": "\\sqrt", "\u2264": "\\le ",
    "\u2265": "\\ge ", "\u2260": "\\ne ", "\u00b1": "\\pm ", "\u222a": "\\cup ", "\u00b0": "",
    "\u00a0": " ",
}  # fmt: skip
_SPACING = re.compile(
    r"(?<!\\)\\[,;:! ]|\\(?:left|right|big|Big|bigg|Bigg|displaystyle|quad|qquad)(?![A-Za-z])"
)
_FRAC_VARIANTS = re.compile(r"\\[dtc]frac(?![A-Za-z])")
_WRAPPER = r"(?<!\\)\\(?:text|textbf|textit|textrm|textnormal|mathrm|mbox)\s*"
_MATH_WRAPPER = r"\\(?:mathbf|boldsymbol|operatorname|mathit)\s*"
_WHOLE_WRAPPER = re.compile(rf"^{_WRAPPER}\{{([^{{}}]*)\}}$")
_CONNECTIVE = re.compile(rf"{_WRAPPER}\{{\s*(?:or|and|,)\s*\}}", re.IGNORECASE)
_IMAGINARY = re.compile(rf"{_WRAPPER}\{{\s*([ie])\s*\}}")
_TRAILING_UNIT = re.compile(rf"^(.*[\w}})\]])\s*{_WRAPPER}\{{[^{{}}]*\}}(?:\^\{{?\d\}}?)?$")
_ANY_WRAPPER = re.compile(rf"(?:{_WRAPPER}|{_MATH_WRAPPER})\{{([^{{}}]*)\}}")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree(?![A-Za-z])")
_UNIT_WORDS = (
    "cm|mm|km|m|in|inch|inches|ft|foot|feet|yd|yard|yards|mile|miles|meter|meters|metre|"
    "metres|centimeters|kilometers|units?|square|sq|cubic|dollars?|cents?|degrees?|"
    "percent|seconds?|minutes?|hours?|days?|weeks?|months?|years?|mph|kg|g|grams?|lbs?|"
    "pounds?|ounces?|oz|liters?|litres?|ml|gallons?"
)
_BARE_UNITS = re.compile(rf"^(.*[\d}})])(?:\s*\b(?:{_UNIT_WORDS})\b\.?(?:\^\{{?\d\}}?)?)+$")
_REPEATING = re.compile(r"(?<![\d.])(\d*)\.(\d*)\s*\\(?:overline|bar)\s*(?:\{(\d+)\}|(\d))")
_BASE = re.compile(r"(?<![\w\\^_{.])([0-9A-Z]+)_\{?\(?(\d{1,2})\)?\}?(?![\d}_])")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_MAX_PASSES = 4
_COMMAND_SPACE = re.compile(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])")


def strip_invisible(text: str) -> str:
    """Drop control/format characters (bidi marks, NUL, zero-width); whitespace stays."""
    if text.isascii() and text.isprintable():
        return text
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if char.isspace():
            kept.append(" ")
        elif category[0] != "C":  # Cc, Cf, Cs, Co, Cn: none is notation
            kept.append(_UNICODE.get(char, char))
    return "".join(kept)


def _unwrap_box(text: str) -> str:
    """`\\boxed{x}` around the whole answer is `x`."""
    for command in ("\\boxed", "\\fbox"):
        if text.startswith(command + "{") and text.endswith("}"):
            inner = text[len(command) + 1 : -1]
            if _balanced(inner):
                return inner.strip()
    return text


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def _strip_delimiters(text: str) -> str:
    """Math delimiters and money signs carry no value."""
    text = _unwrap_box(text.strip())
    text = text.replace("\\$", "").replace("$", "").replace("~", " ")
    for opening, closing in (("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(opening) and text.endswith(closing):
            text = text[2:-2]
    text = re.sub(r",\s*\\!\s*", ",", text)  # 32,\!348
    text = _SPACING.sub(" ", text)
    text = _FRAC_VARIANTS.sub(r"\\frac", text)
    text = text.replace("\\lbrace", "\\{").replace("\\rbrace", "\\}")
    text = text.replace("\\langle", "(").replace("\\rangle", ")")
    return " ".join(text.split())


def _strip_units(text: str) -> str:
    """Units and text wrappers (see the module docstring); the answer's own text stays."""
    whole = _WHOLE_WRAPPER.match(text)
    if whole:
        return whole.group(1).strip()
    text = _CONNECTIVE.sub(",", text)
    text = _IMAGINARY.sub(r"\1", text)
    text = _DEGREES.sub("", text).replace("\\%", "").replace("%", "").strip()
    for _ in range(3):  # "\text{ square }\text{ units}"
        unit = _TRAILING_UNIT.match(text)
        if not unit:
            break
        text = unit.group(1).strip()
    text = _ANY_WRAPPER.sub(r"\1", text)
    bare = _BARE_UNITS.match(text)
    return bare.group(1).strip() if bare else text


def _repeating_to_fraction(match: re.Match) -> str:
    whole, fixed, cycle = match.group(1) or "0", match.group(2), match.group(3) or match.group(4)
    numerator = int(whole + fixed + cycle) - int(whole + fixed)
    denominator = (10 ** len(cycle) - 1) * 10 ** len(fixed)
    return f"{{\\frac{{{numerator}}}{{{denominator}}}}}"


def _base_subscript(match: re.Match) -> str:
    if not any(char.isdigit() for char in match.group(1)):
        return match.group(0)  # A_{12} is a subscripted symbol, not a number
    digits, base = match.group(1).lstrip("0") or "0", int(match.group(2))
    return digits if base == 10 else f"{digits}_{{{base}}}"


def _number_format(text: str) -> str:
    """Whole-answer number spelling: signs, trailing and leading zeros."""
    text = re.sub(r"^\++(?=[\d.])", "", text)
    if re.fullmatch(r"-?\d*\.\d+", text) and text.lstrip("-").startswith("."):
        text = text.replace(".", "0.", 1)
    if re.fullmatch(r"-?\d+\.\d*", text):
        text = text.rstrip("0").rstrip(".")
    if re.fullmatch(r"-?0+\d+(\.\d+)?", text):
        sign = "-" if text.startswith("-") else ""
        text = sign + (text.lstrip("-").lstrip("0") or "0")
        text = "0" + text if text.lstrip("-").startswith(".") else text
    return "0" if text == "-0" else text


def _squeeze(text: str) -> str:
    """Whitespace goes, except after a command before a letter (`\\pi r`, not `\\pir`)."""
    if " " not in text:
        return text
    text = _COMMAND_SPACE.sub("\\1\x02", text)
    return "".join(text.split()).replace("\x02", " ")


def normalize_answer(answer: str) -> str:
    """One string per notation-only variant of an answer (rules: module docstring).

    The rules run until nothing changes (a removal can expose another spelling, as in
    `\\{\\text{or}}`), so that normalising a normalised answer changes nothing."""
    text = strip_invisible(answer)
    if len(text) > MAX_NORMALIZED_CHARS:
        return "".join(text.split())
    for _ in range(_MAX_PASSES):
        once = _normalize_once(text)
        if once == text:
            break
        text = once
    return text


def _normalize_once(text: str) -> str:
    text = _strip_units(_strip_delimiters(text)).replace("{,}", ",").rstrip(".").strip()
    if _THOUSANDS.match(text):  # "1,234" but not the list "1, 234"
        text = text.replace(",", "")
    text = _squeeze(text).rstrip(".")
    text = _REPEATING.sub(_repeating_to_fraction, text)
    text = _BASE.sub(_base_subscript, text)
    if re.fullmatch(r"\(([A-Z])\)", text):  # multiple choice "(C)"
        text = text[1]
    text = _number_format(text)
    return text.replace(",", ", ") if _THOUSANDS.match(text) else text  # keep "1, 234" a list


@dataclass(frozen=True)
class Structure:
    """A bracketed or comma-separated answer, split at its top level.

    kind: "tuple" for `(a, b, ...)` and `[a, b, c]` (ordered; an open interval `(a, b)` is
    the same pair), "interval" for `[a, b]`, `[a, b)`, `(a, b]`, "set" for `\\{...\\}` and
    for a bare list `a, b` (the solutions of an equation: order does not matter),
    "union" for parts joined by `\\cup`.
    """

    kind: str
    parts: tuple[str, ...]
    brackets: str = ""


def _top_level(text: str, separator: str) -> list[str]:
    """`text` split at `separator` outside every bracket; [text] when there is none."""
    parts, depth, start, index = [], 0, 0, 0
    while index < len(text):
        if text.startswith(("\\{", "\\}"), index):
            depth += 1 if text[index + 1] == "{" else -1
            index += 2
            continue
        char = text[index]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0 and text.startswith(separator, index):
            parts.append(text[start:index])
            start = index = index + len(separator)
            continue
        index += 1
    parts.append(text[start:])
    return parts


def _outer_brackets(text: str) -> tuple[str, str, str] | None:
    """(opening, inner, closing) when one bracket pair encloses the whole text."""
    for opening, closing in (("\\{", "\\}"), ("(", ")"), ("(", "]"), ("[", "]"), ("[", ")")):
        if text.startswith(opening) and text.endswith(closing):
            inner = text[len(opening) : len(text) - len(closing)]
            if _depth_ok(inner):
                return opening, inner, closing
    return None


def _depth_ok(inner: str) -> bool:
    """No bracket inside `inner` closes below its start: `(1,2)\\cup(3,4)` is not one pair."""
    depth = 0
    for char in inner.replace("\\{", "(").replace("\\}", ")"):
        depth += 1 if char in "([{" else -1 if char in ")]}" else 0
        if depth < 0:
            return False
    return depth == 0


def split_structure(text: str) -> Structure | None:
    """The top-level structure of a normalised answer, or None for a single value."""
    unions = _top_level(text, "\\cup")
    if len(unions) > 1:
        return Structure("union", tuple(part.strip() for part in unions))
    outer = _outer_brackets(text)
    if outer is None:
        parts = _top_level(text, ",")
        return Structure("set", tuple(parts)) if len(parts) > 1 else None
    opening, inner, closing = outer
    parts = tuple(_top_level(inner, ","))
    if opening == "\\{":
        return Structure("set", parts if inner.strip() else (), "{}")
    if len(parts) == 2 and opening + closing != "()":
        return Structure("interval", parts, opening + closing)
    if len(parts) < 2:
        return None
    return Structure("tuple", parts, opening + closing)
