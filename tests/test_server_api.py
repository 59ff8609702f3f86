"""The HTTP server on loopback with the real engine, driven by `httpx` and the `openai` client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
import uvicorn

from server.app import create_app
from server.config import Settings

from .conftest import BorrowedEngine, free_port
from .model_fixtures import TINY_MODEL_NAME


async def _start(app, port: int) -> tuple[uvicorn.Server, asyncio.Task]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    return server, task


@pytest.fixture(scope="module")
async def base_url(engine) -> AsyncIterator[str]:
    async def borrow(_: Settings):
        return BorrowedEngine(engine)

    port = free_port()
    app = create_app(Settings(port=port, max_n=8), open_engine_fn=borrow)
    server, task = await _start(app, port)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        while (await client.get(f"{url}/health")).status_code != 200:
            await asyncio.sleep(0.05)
    yield url
    server.should_exit = True
    await task


@pytest.fixture
async def client(base_url) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        yield http


def _chat(**overrides):
    body = {
        "model": TINY_MODEL_NAME,
        "messages": [{"role": "user", "content": "Say something."}],
        "max_tokens": 8,
        "seed": 1,
    }
    body.update(overrides)
    return body


async def test_health_and_models(client):
    health = await client.get("/health")
    assert health.json() == {"status": "ok", "model": TINY_MODEL_NAME}
    models = (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == [TINY_MODEL_NAME]
    assert models["data"][0]["max_model_len"] == 1024


async def test_chat_completion_with_the_openai_client(base_url):
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused")
    response = await client.chat.completions.create(
        model=TINY_MODEL_NAME,
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=6,
        temperature=0,
    )
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert response.usage.completion_tokens >= 1
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )
    await client.close()


async def test_n_choices_and_usage_adds_up(client):
    response = await client.post("/v1/chat/completions", json=_chat(n=3, max_tokens=5))
    assert response.status_code == 200
    body = response.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert body["usage"]["completion_tokens"] <= 15
    assert response.headers["x-request-id"].startswith("req-")


async def test_request_id_header_is_echoed(client):
    response = await client.post(
        "/v1/chat/completions", json=_chat(), headers={"x-request-id": "abc-123"}
    )
    assert response.headers["x-request-id"] == "abc-123"


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"n": 9}, "n"),
        ({"max_tokens": 5000}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"stop": ["a", ""]}, "stop"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"logit_bias_typo": 1}, "logit_bias_typo"),
        ({"stream": True}, "stream"),
    ],
)
async def test_bad_parameters_get_an_openai_style_400(client, overrides, param):
    response = await client.post("/v1/chat/completions", json=_chat(**overrides))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


async def test_malformed_json_is_a_400(client):
    response = await client.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "request body is not valid JSON"


async def test_unknown_model_is_a_404(client):
    response = await client.post("/v1/chat/completions", json=_chat(model="gpt-9"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


async def test_openai_client_raises_typed_errors(base_url):
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model=TINY_MODEL_NAME, messages=[{"role": "user", "content": "x"}], temperature=9
        )
    assert caught.value.body["param"] == "temperature"
    await client.close()


async def test_health_is_503_while_the_engine_loads():
    release = asyncio.Event()

    async def slow_open(_: Settings):
        await release.wait()
        raise RuntimeError("never loads in this test")

    port = free_port()
    server, task = await _start(create_app(Settings(port=port), open_engine_fn=slow_open), port)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        loading = await http.get("/health")
        assert loading.status_code == 503 and loading.json() == {"status": "loading"}
        chat = await http.post("/v1/chat/completions", json=_chat())
        assert chat.status_code == 503
        assert chat.json()["error"]["code"] == "engine_not_ready"
        release.set()
        await asyncio.sleep(0.05)
        failed = await http.get("/health")
        assert failed.status_code == 503
        assert "never loads" in failed.json()["error"]["message"]
    server.should_exit = True
    await task
