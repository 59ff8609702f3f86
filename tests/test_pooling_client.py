"""The remote reward-model adapter's HTTP side, against a stand-in pooling server: what
it learns on connect, and the errors it turns failures into."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import web

from ttscale.engine.pooling import RemotePoolingEngine
from ttscale.engine.protocol import EngineError, EngineUnavailable

from .support.servers import free_port, serve_app

SEEN = web.AppKey("seen", list)


def stand_in(*, classify: bool, pooling_status: int = 200) -> web.Application:
    """A vLLM pooling server in miniature: one model; `/pooling` takes the `classify`
    task only when told to, and answers every other call with `pooling_status`."""
    seen: list[dict] = []

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "prm", "max_model_len": 2048}]})

    async def pooling(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append({"body": body, "auth": request.headers.get("Authorization")})
        if body["input"] == [0]:  # the connect probe
            return web.json_response({}, status=200 if classify else 400)
        if pooling_status != 200:
            return web.json_response({"error": {"message": "boom"}}, status=pooling_status)
        return web.json_response({"data": [{"data": [[0.1, 0.9], [0.8, 0.2]]}]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/pooling", pooling)
    app[SEEN] = seen
    return app


async def test_connect_learns_the_model_and_its_tasks_and_pools_rows():
    app = stand_in(classify=True)
    async with serve_app(app) as url:
        engine = await RemotePoolingEngine.connect(url, api_key="secret")
        try:
            assert engine.max_model_len == 2048
            assert await engine.supported_tasks() == ("classify", "token_classify")
            rows = await engine.pool([5, 6, 7], "token_classify", request_id="r1")
            assert rows == [[0.1, 0.9], [0.8, 0.2]]
        finally:
            await engine.close()
    last = app[SEEN][-1]
    assert last["body"] == {"model": "prm", "input": [5, 6, 7], "task": "token_classify",
                            "use_activation": False}  # fmt: skip
    assert last["auth"] == "Bearer secret"


async def test_a_server_without_classify_offers_token_classify_only():
    async with serve_app(stand_in(classify=False)) as url:
        engine = await RemotePoolingEngine.connect(url)
        try:
            assert await engine.supported_tasks() == ("token_classify",)
        finally:
            await engine.close()


async def test_an_error_status_becomes_an_engine_error_naming_the_url():
    async with serve_app(stand_in(classify=True, pooling_status=500)) as url:
        engine = await RemotePoolingEngine.connect(url)
        try:
            with pytest.raises(EngineError, match=r"/pooling: HTTP 500: .*boom"):
                await engine.pool([5], "token_classify")
        finally:
            await engine.close()


async def test_an_unreachable_server_is_unavailable_not_a_crash():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EngineUnavailable, match="cannot reach reward model server"):
        await RemotePoolingEngine.connect(url)


def not_vllm(models_reply: Callable[[], web.Response]) -> web.Application:
    """A server that is up but is not vLLM: `/v1/models` answers `models_reply()`."""

    async def models(request: web.Request) -> web.Response:
        return models_reply()

    app = web.Application()
    app.router.add_get("/v1/models", models)
    return app


@pytest.mark.parametrize(
    "reply",
    [lambda: web.Response(text="<html>hello</html>"), lambda: web.json_response({"data": []})],
    ids=["not-json", "no-model"],
)
@pytest.mark.parametrize("adapter", ["pooling", "generation"])
async def test_a_server_that_is_not_vllm_is_unavailable_and_leaks_no_session(
    adapter, reply, monkeypatch
):
    from ttscale.engine.remote import RemoteVLLMEngine

    opened: list[aiohttp.ClientSession] = []

    real = aiohttp.ClientSession

    def recorded(*args, **kwargs) -> aiohttp.ClientSession:
        opened.append(real(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(aiohttp, "ClientSession", recorded)
    async with serve_app(not_vllm(reply)) as url:
        with pytest.raises(EngineUnavailable, match="does not answer as a vLLM server"):
            if adapter == "pooling":
                await RemotePoolingEngine.connect(url)
            else:
                await RemoteVLLMEngine.connect([url])
    assert opened and all(session.closed for session in opened)


def test_a_bad_url_is_out_of_reach_not_a_server_that_is_not_vllm():
    from ttscale.engine.http_client import unusable

    # aiohttp's InvalidURL is a ValueError as well as a ClientError
    assert unusable("vLLM server x", aiohttp.InvalidURL("x")).startswith("cannot reach")
    assert "does not answer as a vLLM server" in unusable("vLLM server x", KeyError("id"))
