"""Where a sample's answer comes from: the answer format a request names, and the
extraction and exact grouping of answers that are not math.

`AnswerFormat.kind` says how an answer is read from a sample's answer text:

- `boxed` (the default): the math reading of `extraction.extract_answer` (the last
  `\\boxed{}`, else a GSM8K mark, an "answer is" sentence, the last number); such
  answers are grouped by math equivalence (`math_grader`);
- `json`: the text parsed as JSON (a whole-text Markdown code fence is allowed), the
  answer the value at `path` (dotted object keys and list indices, `result.items.0`;
  the whole value when empty); text that does not parse, or has nothing at the path,
  has no answer;
- `regex`: the first capture group (the whole match if the pattern has none) of the
  last match of `pattern`, stripped; a blank one is no answer;
- `choice`: the option the stripped text is, else the option found last as a whole
  word (case-sensitive);
- `tool_call`: a JSON object `{"name": ..., "arguments": {...}}` (at `path`, if given),
  its arguments an object or the JSON text of one; other keys are ignored. A sample
  whose calls the server's tool-call parser read gives the list of its calls: one call
  answers as that call, several as the list, in order.

A `json` or `tool_call` answer is its canonical JSON (`canonical_json`), the others
their text. Answers of every kind but `boxed` are compared by exact equality
(`exact_classes`): a JSON value, an option or a tool call is not a formula, so math
equivalence (and its worker pool) would only blur them.

Pure string work, cheap enough for the event loop: a request's own pattern runs under a
time limit (`REGEX_TIMEOUT_S`), so a pattern that backtracks without end costs its
request an answer, never the loop.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any, Literal

import regex
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from .extraction import extract_answer

logger = logging.getLogger(__name__)

AnswerKind = Literal["boxed", "json", "regex", "choice", "tool_call"]

REGEX_TIMEOUT_S = 0.1
"""The most one sample's text may take to search with a request's pattern; past it the
sample has no answer (a fair pattern takes microseconds on a sample)."""

_PATH_KINDS = ("json", "tool_call")
_MISSING = object()
_FENCE = re.compile(r"```[\w-]*[ \t]*\n(.*?)\n?```", re.DOTALL)
_INDEX = re.compile(r"[0-9]+")


def canonical_json(value: Any) -> str:
    """The one spelling of a JSON value that answers compare by: keys sorted, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def exact_classes(answers: Sequence[str | None]) -> list[int | None]:
    """Vote-class id per answer by exact equality (ids 0, 1, ... in order of first
    appearance, as `MathGrader.group` numbers them); None for no answer."""
    ids: dict[str, int] = {}
    return [None if answer is None else ids.setdefault(answer, len(ids)) for answer in answers]


class AnswerFormat(BaseModel):
    """Where a sample's answer comes from, and so how answers are compared."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: AnswerKind = Field(
        "boxed",
        description="boxed: the math answer (last \\boxed{}), grouped by math equivalence; "
        "json, regex, choice, tool_call: a structured answer, grouped by exact equality",
    )
    path: str = Field(
        "",
        description="json, tool_call: dotted object keys and list indices to the answer "
        "(result.items.0); empty: the whole value",
    )
    pattern: str | None = Field(
        None,
        validate_default=True,
        description="regex: the answer is the first group (or the whole match) of the "
        "pattern's last match",
    )
    options: tuple[str, ...] | None = Field(
        None,
        validate_default=True,
        description="choice: the options (case-sensitive); the answer is the option the "
        "text is, else the one found last as a whole word",
    )

    @field_validator("path")
    @classmethod
    def _check_path(cls, path: str, info: ValidationInfo) -> str:
        kind = info.data.get("kind")
        if path and kind is not None and kind not in _PATH_KINDS:
            raise ValueError(f"only kinds json and tool_call read a path, not {kind!r}")
        if path and "" in path.split("."):
            raise ValueError(f"{path!r} has an empty part: write keys and indices as a.b.0")
        return path

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, pattern: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        if kind is None:  # the kind is wrong: that is the error to report
            return pattern
        if kind != "regex":
            if pattern is not None:
                raise ValueError(f"only kind 'regex' reads a pattern, not {kind!r}")
            return None
        if not pattern:
            raise ValueError("kind 'regex' needs a non-empty pattern")
        try:
            regex.compile(pattern)
        except regex.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return pattern

    @field_validator("options")
    @classmethod
    def _check_options(
        cls, options: tuple[str, ...] | None, info: ValidationInfo
    ) -> tuple[str, ...] | None:
        kind = info.data.get("kind")
        if kind is None:
            return options
        if kind != "choice":
            if options is not None:
                raise ValueError(f"only kind 'choice' reads options, not {kind!r}")
            return None
        if not options:
            raise ValueError("kind 'choice' needs at least one option")
        stripped = tuple(option.strip() for option in options)
        if not all(stripped):
            raise ValueError("an option must not be blank")
        if len(set(stripped)) != len(stripped):
            raise ValueError("the options must be distinct")
        return stripped

    @property
    def by_math(self) -> bool:
        """Whether answers are grouped by math equivalence (boxed) rather than by exact
        equality of their canonical strings (every other kind)."""
        return self.kind == "boxed"

    def extract(self, text: str, *, numeric_fallback: bool = True) -> str | None:
        """The answer of an answer text, as compared (canonical JSON for json and
        tool_call); None when it has none. `numeric_fallback`: for boxed answers, whether
        a text with no other answer answers its last number."""
        if self.kind == "boxed":
            return extract_answer(text, numeric_fallback=numeric_fallback)
        if self.kind == "json":
            value = _json_at(text, self.path)
            return None if value is _MISSING else canonical_json(value)
        if self.kind == "regex":
            return _last_match(self.pattern or "", text)
        if self.kind == "choice":
            return _chosen(self.options or (), text)
        return _tool_call(_json_at(text, self.path))


def _json_at(text: str, path: str) -> Any:
    """The JSON value at `path` in the text, or `_MISSING`."""
    body = text.strip()
    fenced = _FENCE.fullmatch(body)
    if fenced is not None:
        body = fenced.group(1)
    value = _parse(body)
    for step in path.split(".") if path else ():
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and _INDEX.fullmatch(step) and int(step) < len(value):
            value = value[int(step)]
        else:
            return _MISSING
    return value


def _parse(body: str) -> Any:
    """`body` as JSON, or `_MISSING` (NaN and infinities are not JSON: no answer)."""
    try:
        return json.loads(body, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return _MISSING


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _last_match(pattern: str, text: str) -> str | None:
    try:
        matches = list(regex.finditer(pattern, text, timeout=REGEX_TIMEOUT_S))
    except TimeoutError:
        logger.warning("answer pattern %.80r ran past %s s: no answer", pattern, REGEX_TIMEOUT_S)
        return None
    if not matches:
        return None
    last = matches[-1]
    found = last.group(1) if last.re.groups else last.group(0)
    found = found.strip() if found is not None else ""
    return found or None


def _chosen(options: Sequence[str], text: str) -> str | None:
    stripped = text.strip()
    if stripped in options:
        return stripped
    best: tuple[int, int] | None = None  # (end, -start) of the last whole-word option
    answer = None
    for option in options:
        for found in re.finditer(rf"(?<!\w){re.escape(option)}(?!\w)", text):
            where = (found.end(), -found.start())  # ending together: the longer option
            if best is None or where > best:
                best, answer = where, option
    return answer


def _tool_call(call: Any) -> str | None:
    """A call as its canonical JSON: name and parsed arguments. A list of calls (what a
    tool-call parser read from a sample) answers its one call, or all of them in order."""
    if isinstance(call, list):
        calls = [_one_call(item) for item in call]
        if not calls or any(c is None for c in calls):
            return None
        return canonical_json(calls[0] if len(calls) == 1 else calls)
    one = _one_call(call)
    return None if one is None else canonical_json(one)


def _one_call(call: Any) -> dict[str, Any] | None:
    if not isinstance(call, dict):
        return None
    name, arguments = call.get("name"), call.get("arguments", {})
    if isinstance(arguments, str):
        arguments = _parse(arguments)
    if not isinstance(name, str) or not name.strip() or not isinstance(arguments, dict):
        return None
    return {"name": name, "arguments": arguments}
