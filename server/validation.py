"""One way to name what a pydantic validation error is about, for one-line messages."""

from __future__ import annotations

from typing import NamedTuple

from pydantic import ValidationError


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
