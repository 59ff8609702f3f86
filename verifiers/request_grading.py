"""One request's bounds on the shared grading pool, and the account of what it used.

The grader's worker pool is shared by every request. Without bounds, one request whose
answers are adversarial (an integral sympy cannot finish) could queue dozens of checks
that each hold a worker until their timeout, and every other request's grading would
wait behind them. So each request gets:

- a grading deadline: the total wall time its grouping calls may spend (each call
  still has the grader's own per-call budget); once it is spent, answers are grouped by
  what is already known (cached keys and verdicts) and by their normalised strings,
  and no new check starts;
- a share of the pool: at most `ceil(workers / 2)` of its checks run at once. A
  semaphore rather than a fair queue, because a fair queue cannot take back a worker
  that an adversarial check already holds: with the semaphore a request always finds
  a worker no other single request can hold (two or more workers), so one slow
  request never delays another's checks, whatever it submits. The cost is that a
  lone request grades on half the pool, which its (millisecond) checks hardly notice.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any


class DeadlinePassed(Exception):
    """A check was not started: the grading call that wanted it is out of time."""


@dataclass
class GradingTally:
    """What one request's grading cost; its evidence and its metrics."""

    deadline_s: float
    seconds: float = 0.0
    """Wall time spent in grouping calls (overlapping calls count twice)."""
    calls: int = 0
    checks: int = 0
    """Checks run in a worker for this request."""
    timeouts: int = 0
    """Checks killed at the per-check timeout; their answers keep a class of their own."""
    skipped: int = 0
    """Checks never started because the call that wanted them was out of time."""
    deadline_reached: bool = False
    """A grouping call ran out of the request's grading time (not just its own budget)."""

    def evidence(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 4),
            "calls": self.calls,
            "checks": self.checks,
            "timeouts": self.timeouts,
            "skipped_checks": self.skipped,
            "deadline_s": self.deadline_s,
            "deadline_reached": self.deadline_reached,
        }


@dataclass
class RequestGrading:
    """One request's grading deadline, pool share and tally."""

    deadline_s: float
    max_concurrent: int
    tally: GradingTally = field(init=False)
    _slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.tally = GradingTally(self.deadline_s)
        self._slots = asyncio.Semaphore(self.max_concurrent)

    @classmethod
    def for_pool(cls, workers: int, deadline_s: float) -> RequestGrading:
        return cls(deadline_s, max_concurrent=max(1, math.ceil(workers / 2)))

    def remaining_s(self) -> float:
        return max(0.0, self.deadline_s - self.tally.seconds)

    def spent(self, seconds: float, *, ran_out: bool) -> None:
        """Book one grouping call; `ran_out`: it ended at the request's deadline."""
        self.tally.calls += 1
        self.tally.seconds += seconds
        self.tally.deadline_reached |= ran_out

    @asynccontextmanager
    async def slot(self, start_by: float | None) -> AsyncIterator[None]:
        """Hold one of the request's worker slots; refuse to start after `start_by`
        (loop time), so a call that gave up leaves no queue of checks behind it."""
        async with self._slots:
            if start_by is not None and asyncio.get_running_loop().time() >= start_by:
                self.tally.skipped += 1
                raise DeadlinePassed
            self.tally.checks += 1
            yield
