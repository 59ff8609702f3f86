"""How the server's watch tells a dead engine from a busy one.

A probe that is refused or answered with an error counts against a short allowance; a
probe that gets no answer in time (a router or replica too loaded to answer within the
probe's timeout) against a longer one, so that a front under load does not exit and
restart into the same load.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiohttp import web

from ttscale.engine.protocol import EngineSlow, EngineUnavailable
from ttscale.engine.remote import PROBE_TIMEOUT, RemoteVLLMEngine
from ttscale.engine.types import EngineInfo
from ttscale.server.app import Runtime
from ttscale.server.config import Settings

from .support.fakes import Scripted, ScriptedEngine
from .support.servers import free_port, serve_app

INFO = EngineInfo(model_name="m", max_model_len=512, backend="remote")


async def test_a_probe_without_an_answer_in_time_is_slow_and_a_refused_one_unavailable():
    async def late(_: web.Request) -> web.Response:
        await asyncio.sleep(PROBE_TIMEOUT.total + 1)
        return web.Response(text="ok")

    async def no_such_route(_: web.Request) -> web.Response:
        return web.Response(status=404)  # a plain vLLM server: no router's /readiness

    app = web.Application()
    app.add_routes([web.get("/health", late), web.get("/readiness", no_such_route)])
    async with serve_app(app) as url:
        engine = RemoteVLLMEngine([url], INFO)
        try:
            with pytest.raises(EngineSlow):
                await engine.check_health()
        finally:
            await engine.close()
    gone = RemoteVLLMEngine([f"http://127.0.0.1:{free_port()}"], INFO)
    try:
        with pytest.raises(EngineUnavailable) as refused:
            await gone.check_health()
        assert not isinstance(refused.value, EngineSlow)
    finally:
        await gone.close()


class ProbedEngine(ScriptedEngine):
    """Answers its health checks as scripted: an exception to raise, or None for ok."""

    def __init__(self, answers: list[Exception | None]) -> None:
        super().__init__(lambda *_: Scripted("1"))
        self._answers = answers
        self.checks = 0

    async def check_health(self) -> None:
        self.checks += 1
        answer = self._answers.pop(0) if self._answers else None
        if answer is not None:
            raise answer


async def _watch(answers: list[Exception | None]) -> tuple[Runtime, ProbedEngine]:
    """Run the server's engine watch until every scripted answer has been given."""
    engine = ProbedEngine(list(answers))

    async def open_engine(_: Settings) -> ProbedEngine:
        return engine

    runtime = Runtime(Settings(), health_interval_s=0.0)
    watch = asyncio.create_task(runtime.load_and_watch(open_engine))
    while engine.checks <= len(answers) and not watch.done():
        await asyncio.sleep(0.01)
    watch.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watch
    await runtime.close()
    return runtime, engine


async def test_ten_late_probes_in_a_row_are_tolerated_three_refusals_are_not():
    slow = EngineSlow("no answer within 2 s")
    runtime, _ = await _watch([slow] * 10 + [None])
    assert runtime.failure is None
    runtime, _ = await _watch([slow] * 11)
    assert runtime.failure == "engine died: no answer within 2 s"
    refused = EngineUnavailable("connection refused")
    runtime, _ = await _watch([refused] * 2 + [None])
    assert runtime.failure is None
    # late, then refused: the refusal decides, with the short allowance
    runtime, _ = await _watch([slow] * 2 + [refused])
    assert runtime.failure == "engine died: connection refused"
