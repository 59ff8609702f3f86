"""Blocking engine loads off the event loop, without orphans when the caller gives up.

Starting vLLM blocks for tens of seconds and spawns engine processes, so it runs in a
thread. A thread cannot be interrupted: if the awaiting task is cancelled (the server
is told to stop while the model loads), the load still finishes, and the engine it
made would have no owner: its processes (gigabytes) would outlive the server, or be
left to interpreter-exit finalizers that may run too late. So a cancelled caller waits
for the load to end, closes what it made, and only then lets the cancellation through.

A load can also hang (seen: a vLLM worker that never finished starting on an
overloaded machine). Waiting for it forever would make the server ignore SIGTERM until
its supervisor kills it, and a killed server orphans its engine processes. So the wait
is bounded: after `patience_s` the processes the load started are stopped (SIGTERM,
then SIGKILL), which makes vLLM's start-up fail and the load return. The load runs in a
daemon thread, so a load that never returns cannot hold the interpreter's exit either.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")


async def load_in_thread(
    load: Callable[[], T],
    close: Callable[[T], Awaitable[None]],
    *,
    patience_s: float = 30.0,
) -> T:
    """`load()` in a thread; on cancellation, `close` its result once it exists (stopping
    the processes it started if it has not returned within `patience_s`)."""
    before = _child_pids()
    loading = _start_daemon_thread(load)
    try:
        return await asyncio.shield(loading)
    except asyncio.CancelledError:
        logger.info("stopping the engine that was loading, once its load returns")
        await _close_when_loaded(loading, close, patience_s, before)
        raise


async def close_together(*closes: Awaitable[None]) -> None:
    """Await every close at once, then raise the first failure. Each vLLM engine's
    shutdown waits up to 5 s for its process to exit, so a server with a generator and two
    reward models took 15 s to stop one after another; and a close that fails must not
    keep the others from stopping their processes."""
    results = await asyncio.gather(*closes, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _start_daemon_thread(load: Callable[[], T]) -> asyncio.Future:
    """`asyncio.to_thread`, but in a daemon thread of its own (not the loop's executor,
    whose threads the interpreter waits for at exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def work() -> None:
        try:
            settle, value = future.set_result, load()
        except BaseException as exc:  # the caller sees it, as with asyncio.to_thread
            settle, value = future.set_exception, exc
        try:
            loop.call_soon_threadsafe(_settle, future, settle, value)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    threading.Thread(target=work, name="engine-load", daemon=True).start()
    return future


def _settle(future: asyncio.Future, settle: Callable[[Any], None], value: Any) -> None:
    if not future.done():
        settle(value)


async def _close_when_loaded(
    loading: asyncio.Future,
    close: Callable[[Any], Awaitable[None]],
    patience_s: float,
    before: set[int],
) -> None:
    """Wait out the load (further cancellations cannot stop the thread either), stop
    its processes if it takes too long, then close the engine it made, if any."""
    if not await _wait(loading, patience_s):
        logger.warning(
            "the engine load has not returned in %.0f s: stopping its processes", patience_s
        )
        await asyncio.to_thread(_stop_processes, _child_pids() - before)
        if not await _wait(loading, 30.0):
            logger.error("the engine load did not return after its processes were stopped")
            return
    if loading.cancelled() or loading.exception() is not None:
        return
    await close(loading.result())
    logger.info("the engine that was loading is stopped")


async def _wait(future: asyncio.Future, limit_s: float) -> bool:
    """Whether `future` finished within `limit_s`, cancellations of the caller ignored."""
    deadline = time.monotonic() + limit_s
    while not future.done():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            await asyncio.wait([future], timeout=remaining)
        except asyncio.CancelledError:
            continue
    return True


def _child_pids() -> set[int]:
    return {process.pid for process in multiprocessing.active_children() if process.pid}


def _stop_processes(roots: set[int], grace_s: float = 10.0) -> None:
    """SIGTERM `roots` (vLLM's engine processes stop their workers on it), then SIGKILL
    whatever of them and their descendants is left after `grace_s`."""
    every = set(roots) | {pid for root in roots for pid in _descendants(root)}
    _signal(roots, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in every):
        time.sleep(0.2)
    _signal({pid for pid in every if _alive(pid)}, signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc; the children of each of its threads)."""
    found: list[int] = []
    stack = [pid]
    while stack:
        parent = stack.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(child) for child in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            found += children
            stack += children
    return found


def _signal(pids: set[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            continue


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
