"""Domain errors of the service entry, and one way to name a pydantic error's field.

The entry raises these; the HTTP layer maps each to its status code and an
OpenAI-style body, the benchmark to a one-line message. `param` is the dotted request
field the error is about (`ttscale.params.n`), so a client knows what to fix.
"""

from __future__ import annotations

from typing import NamedTuple

from pydantic import ValidationError


class RequestError(Exception):
    """The request cannot be served as asked: the caller's to fix."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


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
