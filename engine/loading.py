"""Blocking engine loads off the event loop, without orphans when the caller gives up.

Starting vLLM blocks for tens of seconds and spawns engine processes, so it runs in a
thread. A thread cannot be interrupted: if the awaiting task is cancelled (the server
is told to stop while the model loads), the load still finishes, and the engine it
made would have no owner: its processes (gigabytes) would outlive the server, or be
left to interpreter-exit finalizers that may run too late. So a cancelled caller waits
for the load to end, closes what it made, and only then lets the cancellation through.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")


async def load_in_thread(load: Callable[[], T], close: Callable[[T], Awaitable[None]]) -> T:
    """`load()` in a thread; on cancellation, `close` its result once it exists."""
    loading = asyncio.ensure_future(asyncio.to_thread(load))
    try:
        return await asyncio.shield(loading)
    except asyncio.CancelledError:
        logger.info("stopping the engine that was loading, once its load returns")
        await _close_when_loaded(loading, close)
        raise


async def _close_when_loaded(loading: asyncio.Future, close: Callable[[T], Awaitable[None]]):
    """Wait out the load (further cancellations cannot stop the thread either), then
    close the engine; a load that failed has nothing to close."""
    while not loading.done():
        try:
            await asyncio.shield(loading)
        except asyncio.CancelledError:
            continue
        except Exception:
            return
    if loading.cancelled() or loading.exception() is not None:
        return
    await close(loading.result())
    logger.info("the engine that was loading is stopped")
