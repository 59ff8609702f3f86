"""Retrying remote calls that failed because a replica went away.

Behind vllm-router a replica can die in the middle of a streamed sample: the router
cannot retry a stream it has already started answering, so the connection just closes.
The sample is then started again from its prompt (through the router, which sends it to
a healthy replica once its circuit breaker or health check has dropped the dead one),
and a request whose samples still cannot run after `give_up_after_s` fails with an
`EngineError`, which the server answers with a 503: never a hang.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from .protocol import EngineError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class TransientError(EngineError):
    """A failure that another attempt may not meet: the connection broke, the server
    answered 5xx, 408 or 429 (the router had no healthy worker, or a full queue)."""


def is_transient_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


@dataclass(frozen=True)
class Failover:
    """How long and how often a failed remote call is tried again."""

    give_up_after_s: float = 30.0
    """Counted from the first failure, so a long sample that fails late still gets it."""
    first_backoff_s: float = 0.25
    max_backoff_s: float = 2.0

    async def run(self, attempt: Callable[[int], Awaitable[T]], what: str) -> T:
        """`attempt(number)` until it succeeds, raises a non-transient error, or time is up."""
        loop = asyncio.get_running_loop()
        first_failure: float | None = None
        delay = self.first_backoff_s
        number = 0
        while True:
            try:
                return await attempt(number)
            except TransientError as exc:
                now = loop.time()
                first_failure = now if first_failure is None else first_failure
                number += 1
                waited = now - first_failure
                if waited + delay > self.give_up_after_s:
                    raise EngineError(
                        f"{what}: gave up after {number} attempts over {waited:.1f} s: {exc}"
                    ) from exc
                logger.warning("%s: attempt %d failed (%s); retrying", what, number, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
