"""Domain errors of the service entry, and how they name the fields they are about.

The entry raises these; the HTTP layer maps each to its status code and an OpenAI-style
body, the benchmark to a one-line message. An error names its field by the service's own
path (`ServiceRequest`'s structure: `n`, `sampling.max_tokens`, `choice.params.n`,
`choice.budget.max_wall_s`); a front end that calls the fields otherwise renames them
with `RequestError.named`, in the `param` and wherever the message mentions a field
(written there with `field_ref`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

from pydantic import ValidationError

_MARK = "\x1f"  # a control character: never in a message's own text (values are repr'd)
_FIELD = re.compile(f"{_MARK}([^{_MARK}]*){_MARK}")

Namer = Callable[[str], str]
"""Renames a service field path to what a front end calls that field."""


def field_ref(path: str) -> str:
    """A field named inside an error message, renamed with the error's `param`."""
    return f"{_MARK}{path}{_MARK}"


def _as_is(path: str) -> str:
    return path


class RequestError(Exception):
    """The request cannot be served as asked: the caller's to fix."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self._message = message
        self.param = param
        self.code = code

    def named(self, name: Namer) -> tuple[str, str | None]:
        """The message and the param, every field in them renamed by `name`."""
        message = _FIELD.sub(lambda found: name(found.group(1)), self._message)
        return message, None if self.param is None else name(self.param)

    @property
    def message(self) -> str:
        """The message with the service's own field paths."""
        return self.named(_as_is)[0]

    def __str__(self) -> str:
        return self.message


class InvalidRequest(RequestError):
    """A value is wrong, too large, or does not fit the model's context."""


class ModelNotFound(RequestError):
    """The request names a model this service does not serve."""


class FirstProblem(NamedTuple):
    where: str
    """Dotted location of the field ("" for the model itself)."""
    message: str
    kind: str
    """pydantic's error type, e.g. "extra_forbidden"."""


def first_problem(exc: ValidationError) -> FirstProblem:
    """The first error only: one line a user can act on, not a dump of all of them."""
    problem = exc.errors()[0]
    where = ".".join(str(part) for part in problem["loc"])
    return FirstProblem(where, problem["msg"], problem["type"])
