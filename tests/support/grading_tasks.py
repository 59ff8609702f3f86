"""Tasks that tests hand to the grading workers (`MathGrader._run`) to watch the pool
itself: whether a worker warmed up before its first task, and what happens to one
that overruns. They live here, not in the product, because only tests send them."""

from __future__ import annotations

import sys
import time


def sympy_loaded() -> bool:
    """Whether this worker had imported sympy when the task started."""
    return "sympy" in sys.modules


def sleep_for_test(seconds: float) -> None:
    """A task that overruns on purpose, so that the pool must replace its worker."""
    time.sleep(seconds)
