"""`ttscale serve` stopped while vLLM is still loading leaves no engine process behind.

The engine loads in a thread that cannot be interrupted; a server that simply exited
left the vLLM engine core (gigabytes) running as an orphan. These tests stop a real
server mid-load and look for its engine processes afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from ttscale.engine.lifecycle import close_together, load_in_thread

from .support.servers import free_port

TTSCALE = [sys.executable, "-m", "ttscale.cli"]


def _engine_cores(process: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in process.children(recursive=True):
        try:
            if "EngineCore" in " ".join([child.name(), *child.cmdline()]):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def _wait_for_engine_core(server: subprocess.Popen, log: Path, limit_s: float) -> None:
    """Until the server has started its engine core process (and not yet finished
    loading: the log says nothing of a ready engine)."""
    deadline = time.monotonic() + limit_s
    parent = psutil.Process(server.pid)
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()[-3000:]
        if _engine_cores(parent):
            assert "engine ready" not in log.read_text(), "loaded before it could be stopped"
            return
        time.sleep(0.1)
    raise AssertionError(f"no engine core process within {limit_s} s:\n{log.read_text()[-3000:]}")


def test_sigterm_during_the_model_load_stops_the_engine_it_was_loading(
    tiny_model_path: Path, subprocess_env, tmp_path
):
    """(SIGINT takes the same path through uvicorn's signal handling.)"""
    log = tmp_path / "serve.log"
    command = [*TTSCALE, "serve", "--model", str(tiny_model_path),
               "--port", str(free_port()), "--max-model-len", "512"]  # fmt: skip
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=subprocess_env)
    descendants: list[psutil.Process] = []
    try:
        _wait_for_engine_core(server, log, 180)
        descendants = psutil.Process(server.pid).children(recursive=True)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=180) == 0, log.read_text()[-3000:]
        _, alive = psutil.wait_procs(descendants, timeout=15)
        assert not alive, f"left running: {[p.name() for p in alive]}\n{log.read_text()[-3000:]}"
    finally:  # whatever happened, this test leaves no process behind
        if server.poll() is None:
            server.kill()
        for process in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
    output = log.read_text()
    assert "stopping the engine that was loading" in output
    # Closed by its owner once loaded, or stopped if the load hung (seen here, rarely, in
    # vLLM's worker start-up on a loaded machine); never left to exit-time finalizers.
    assert ("the engine that was loading is stopped" in output) != (
        "the engine load has not returned" in output
    )
    assert "Traceback" not in output


# --- the rule itself, on a stand-in load ------------------------------------------------


class _Load:
    """A blocking 'load' the test releases, and a record of what was closed."""

    def __init__(self, fails: bool = False) -> None:
        self.release = threading.Event()
        self.fails = fails
        self.closed: list[str] = []

    def __call__(self) -> str:
        self.release.wait(timeout=10)
        if self.fails:
            raise RuntimeError("the load failed")
        return "engine"

    async def close(self, engine: str) -> None:
        self.closed.append(engine)


async def test_a_load_that_is_not_cancelled_returns_its_engine():
    load = _Load()
    load.release.set()
    assert await load_in_thread(load, load.close) == "engine"
    assert load.closed == []


async def test_a_cancelled_caller_waits_for_the_load_and_closes_what_it_made():
    load = _Load()
    caller = asyncio.create_task(load_in_thread(load, load.close))
    await asyncio.sleep(0.05)
    caller.cancel()
    await asyncio.sleep(0.05)
    assert not caller.done()  # still waiting for the thread
    load.release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert load.closed == ["engine"]


async def test_a_load_that_fails_after_the_cancellation_leaves_nothing_to_close():
    load = _Load(fails=True)
    caller = asyncio.create_task(load_in_thread(load, load.close))
    await asyncio.sleep(0.05)
    caller.cancel()
    load.release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert load.closed == []


def _start_process_then_hang() -> str:
    """A load that starts a process and waits on it, as vLLM waits on its engine core."""
    core = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(600,))
    core.start()
    core.join()
    raise RuntimeError(f"the engine core exited with {core.exitcode} during start-up")


async def test_a_load_that_hangs_is_stopped_after_the_patience():
    async def close(engine: str) -> None:
        raise AssertionError("nothing was loaded, nothing to close")

    # Engines of earlier tests may still be children of this process: only the new one counts.
    before = {child.pid for child in multiprocessing.active_children()}
    caller = asyncio.create_task(load_in_thread(_start_process_then_hang, close, patience_s=1.0))
    await asyncio.sleep(1.0)  # the process is started
    started = [
        psutil.Process(child.pid)
        for child in multiprocessing.active_children()
        if child.pid not in before
    ]
    assert started
    caller.cancel()
    began = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert time.monotonic() - began < 1.0 + 10.0  # the patience, then its grace at most
    _, alive = psutil.wait_procs(started, timeout=5)
    assert not alive


async def test_closes_run_together_and_one_that_fails_does_not_stop_the_others():
    """A server stops its engine, reward models and grading workers at once: each vLLM
    engine waits seconds for its process to exit. One close that fails is reported, after
    the others have finished."""
    started: list[str] = []
    finished: list[str] = []
    all_started = asyncio.Event()

    async def close(name: str, fails: bool = False) -> None:
        started.append(name)
        if len(started) == 3:
            all_started.set()
        await asyncio.wait_for(all_started.wait(), 5)  # one after another would time out
        if fails:
            raise RuntimeError(f"{name} could not stop")
        finished.append(name)

    with pytest.raises(RuntimeError, match="prm could not stop"):
        await close_together(close("engine"), close("prm", fails=True), close("orm"))
    assert sorted(finished) == ["engine", "orm"]
