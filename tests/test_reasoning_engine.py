"""Reasoning models through the real engine: a tiny random model whose chat template opens
a thought, read by vLLM's own `deepseek_r1` parser. Random weights never close a thought
by themselves, so every answer part here exists because a thinking budget closed it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from openai import AsyncOpenAI

from ttscale.engine.local_vllm import LocalVLLMEngine
from ttscale.engine.protocol import EngineUnavailable
from ttscale.engine.remote import RemoteVLLMEngine
from ttscale.engine.types import SamplingSpec

from .support.servers import serve_app, serving_engine, vllm_api_server
from .support.tiny_models import THINK_END, TINY_REASONING_NAME, tiny_reasoning_model_dir

CHAT = [{"role": "user", "content": "What is 7 + 5?"}]
SEEDED = {"temperature": 1.0, "seed": 3, "max_tokens": 24}
"""Seeded, not greedy: greedy decoding of random weights repeats one token."""


@pytest.fixture(scope="session")
def reasoning_model_path(default_model_path: Path) -> Path:
    return tiny_reasoning_model_dir()


@pytest.fixture(scope="module")
async def thinker(reasoning_model_path: Path, starts_vllm) -> AsyncIterator[LocalVLLMEngine]:
    engine = await asyncio.to_thread(
        LocalVLLMEngine.load,
        reasoning_model_path,
        TINY_REASONING_NAME,
        max_model_len=512,
        reasoning_parser="deepseek_r1",
    )
    yield engine
    await engine.close()


@pytest.fixture(scope="module")
async def thinker_url(thinker) -> AsyncIterator[str]:
    async with serving_engine(thinker) as url:
        yield url


def end_token_id(model_path: Path) -> int:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path).convert_tokens_to_ids(THINK_END)


async def test_a_thinking_budget_closes_the_thought_and_the_model_answers(
    thinker, reasoning_model_path
):
    prompt = await thinker.render_chat(CHAT)
    spec = SamplingSpec(**SEEDED, thinking_token_budget=10)
    sample = (await thinker.generate(prompt, spec)).samples[0]
    closes = sample.token_ids.index(end_token_id(reasoning_model_path))
    assert closes < 10  # vLLM forces the close within the budget
    assert sample.reasoning_tokens == closes and sample.thinking_span == closes + 1
    assert sample.reasoning and sample.content  # the answer part exists
    assert sample.num_tokens == 24  # the answer ran on to max_tokens


async def test_without_a_budget_the_thought_never_closes_and_there_is_no_answer_part(thinker):
    prompt = await thinker.render_chat(CHAT)
    sample = (
        await thinker.generate(prompt, SamplingSpec(temperature=1.0, seed=3, max_tokens=40))
    ).samples[0]
    assert sample.reasoning_tokens == sample.num_tokens == 40
    assert sample.content == "" and sample.answer_text == ""


async def test_the_chat_api_returns_thinking_apart_and_counts_its_tokens(thinker, thinker_url):
    body = {"model": TINY_REASONING_NAME, "messages": CHAT, **SEEDED, "thinking_budget": 10}
    async with httpx.AsyncClient(base_url=thinker_url, timeout=120) as http:
        reply = (await http.post("/v1/chat/completions", json=body)).json()
    message = reply["choices"][0]["message"]
    assert message["reasoning"] and message["reasoning"] == message["reasoning_content"]
    assert message["content"]
    prompt = await thinker.render_chat(CHAT)
    spec = SamplingSpec(**SEEDED, thinking_token_budget=10)
    sample = (await thinker.generate(prompt, spec)).samples[0]
    assert message["reasoning"] == sample.reasoning and message["content"] == sample.content
    usage = reply["usage"]
    assert usage["completion_tokens_details"] == {"reasoning_tokens": sample.reasoning_tokens}
    assert usage["completion_tokens"] == 24


async def test_a_sample_still_thinking_has_null_content_as_in_vllm(thinker_url):
    body = {"model": TINY_REASONING_NAME, "messages": CHAT, **SEEDED}
    async with httpx.AsyncClient(base_url=thinker_url, timeout=120) as http:
        thinking = (await http.post("/v1/chat/completions", json=body)).json()
        hidden = await http.post("/v1/chat/completions", json={**body, "include_reasoning": False})
    message = thinking["choices"][0]["message"]
    assert message["content"] is None and message["reasoning"]
    details = thinking["usage"]["completion_tokens_details"]
    assert details == {"reasoning_tokens": thinking["usage"]["completion_tokens"]}
    quiet = hidden.json()
    assert quiet["choices"][0]["message"]["reasoning"] is None  # asked to leave it out
    assert quiet["usage"]["completion_tokens_details"] == details  # still counted


async def test_the_official_client_reads_reasoning_content_and_streams_it(thinker_url):
    client = AsyncOpenAI(base_url=f"{thinker_url}/v1", api_key="unused")
    extra = {"thinking_token_budget": 10}
    reply = await client.chat.completions.create(
        model=TINY_REASONING_NAME, messages=CHAT, extra_body=extra, **SEEDED
    )
    message = reply.choices[0].message
    assert message.reasoning_content and message.content
    stream = await client.chat.completions.create(
        model=TINY_REASONING_NAME, messages=CHAT, extra_body=extra, stream=True,
        stream_options={"include_usage": True}, **SEEDED,
    )  # fmt: skip
    parts, usage = [], None
    async for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            delta = choice.delta.model_dump(exclude_none=True)
            parts += [key for key in ("reasoning_content", "content") if delta.get(key)]
    assert parts == ["reasoning_content", "content"]  # the thinking first, then the answer
    assert (
        usage.completion_tokens_details.reasoning_tokens
        == reply.usage.completion_tokens_details.reasoning_tokens
    )


async def test_a_strategy_spends_a_thinking_budget_per_sample_and_reports_it(thinker_url):
    params = {"n": 3, "sampling": {"thinking_budget": 8, "max_tokens": 20, "seed": 1}}
    body = {
        "model": TINY_REASONING_NAME,
        "messages": CHAT,
        "ttscale": {"strategy": "self_consistency", "params": params, "include_text": True},
    }
    async with httpx.AsyncClient(base_url=thinker_url, timeout=120) as http:
        reply = (await http.post("/v1/chat/completions", json=body)).json()
    evidence = reply["ttscale"]
    thoughts = [c["reasoning_tokens"] for c in evidence["candidates"]]
    assert len(thoughts) == 3 and all(0 < t < 8 for t in thoughts)
    assert all(c["reasoning"] and c["content"] for c in evidence["candidates"])
    spent = evidence["budget"]["spent"]
    assert spent["reasoning_tokens"] == sum(thoughts) < spent["generated_tokens"] == 60
    assert reply["usage"]["completion_tokens_details"]["reasoning_tokens"] == sum(thoughts)
    body["ttscale"]["include_text"] = False
    async with httpx.AsyncClient(base_url=thinker_url, timeout=120) as http:
        lean = (await http.post("/v1/chat/completions", json=body)).json()["ttscale"]
    assert not {"text", "content", "reasoning"} & set(lean["candidates"][0])


async def test_a_thinking_budget_must_leave_room_for_the_answer(thinker_url):
    body = {"model": TINY_REASONING_NAME, "messages": CHAT, "max_tokens": 16,
            "thinking_token_budget": 16}  # fmt: skip
    async with httpx.AsyncClient(base_url=thinker_url, timeout=60) as http:
        reply = await http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == "thinking_token_budget" and "max_tokens=16" in error["message"]


async def test_a_thinking_budget_on_a_server_without_a_reasoning_parser_is_a_400(engine):
    async with (
        serving_engine(engine) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as http,
    ):
        body = {"model": engine.info.model_name, "messages": CHAT, "thinking_token_budget": 4}
        reply = await http.post("/v1/chat/completions", json=body)
        plain = await http.post("/v1/chat/completions", json={**body, "thinking_token_budget": -1})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == "thinking_token_budget" and "reasoning" in error["message"]
    assert plain.status_code == 200  # -1 is vLLM's "no budget"
    assert plain.json()["choices"][0]["message"]["reasoning"] is None


def test_an_unknown_reasoning_parser_is_refused_at_start_up(subprocess_env, tmp_path):
    from .test_cli import assert_one_line_error, run_cli

    result = run_cli("serve", "--reasoning-parser", "no_such_parser", env=subprocess_env)
    assert_one_line_error(result, "unknown reasoning parser 'no_such_parser'")
    remote = run_cli(
        "serve", "--engine", "remote", "--remote-url", "http://127.0.0.1:9",
        "--reasoning-parser", "deepseek_r1", env=subprocess_env,
    )  # fmt: skip
    assert_one_line_error(remote, "needs --model DIR")


@pytest.fixture(scope="module")
def thinking_server(
    reasoning_model_path: Path, starts_vllm, subprocess_env, tmp_path_factory
) -> Iterator[str]:
    args = ["--model", str(reasoning_model_path), "--served-model-name", TINY_REASONING_NAME,
            "--max-model-len", "512", "--dtype", "float32", "--no-enable-chunked-prefill",
            "--reasoning-parser", "deepseek_r1"]  # fmt: skip
    with vllm_api_server(args, subprocess_env, tmp_path_factory.mktemp("thinking")) as url:
        yield url


async def test_the_remote_engine_splits_thinking_as_the_local_one(
    thinking_server, reasoning_model_path, thinker
):
    remote = await RemoteVLLMEngine.connect(
        [thinking_server], model_path=str(reasoning_model_path), reasoning_parser="deepseek_r1"
    )
    try:
        assert remote.info.reasoning_parser == "deepseek_r1"
        prompt = await remote.render_chat(CHAT)
        spec = SamplingSpec(**SEEDED, thinking_token_budget=10)
        there = (await remote.generate(prompt, spec)).samples[0]
    finally:
        await remote.close()
    here = (await thinker.generate(prompt, spec)).samples[0]
    closes = there.token_ids.index(end_token_id(reasoning_model_path))
    assert there.reasoning_tokens == closes < 10 and there.reasoning and there.content
    assert there.token_ids == here.token_ids  # float32, one seed: the same tokens
    assert (there.reasoning, there.content) == (here.reasoning, here.content)


async def test_a_remote_server_that_refuses_thinking_budgets_is_refused_at_connect(
    reasoning_model_path,
):
    """vLLM without its own reasoning parser answers a thinking budget with a 400: the
    front says so when it connects, not on the first request."""

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "m", "max_model_len": 512}]})

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        if "thinking_token_budget" in body:
            message = "thinking_token_budget is set but reasoning_config is not configured."
            return web.json_response({"error": {"message": message}}, status=400)
        return web.json_response({"choices": [{"text": "x"}]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", completions)
    async with serve_app(app) as url:
        with pytest.raises(EngineUnavailable, match="--reasoning-parser too"):
            await RemoteVLLMEngine.connect(
                [url], model_path=str(reasoning_model_path), reasoning_parser="deepseek_r1"
            )


async def test_budget_forcing_closes_a_random_models_thought_at_its_cap(thinker_url):
    """Random weights never close a thought: every chain is closed at the cap, by the
    strategy writing the close token, and then answers."""
    params = {"n": 2, "answer_tokens": 12, "sampling": {"max_tokens": 36, "seed": 5}}
    body = {
        "model": TINY_REASONING_NAME,
        "messages": CHAT,
        "ttscale": {"strategy": "budget_forcing", "params": params, "include_text": True},
    }
    async with httpx.AsyncClient(base_url=thinker_url, timeout=120) as http:
        reply = (await http.post("/v1/chat/completions", json=body)).json()
    evidence = reply["ttscale"]
    assert [c["forced_close"] for c in evidence["details"]["chains"]] == [True, True]
    assert all(c["reasoning_tokens"] == 24 for c in evidence["candidates"])
    assert all(c["content"] for c in evidence["candidates"])  # each chain answered
    spent = evidence["budget"]["spent"]
    assert spent["reasoning_tokens"] == 48 and spent["generated_tokens"] == 2 * 36
    assert all(c["reasoning"] for c in evidence["candidates"])


async def test_chat_template_kwargs_reach_the_template_in_both_modes(
    thinker_url, thinking_server, reasoning_model_path
):
    """Qwen3's switch: `enable_thinking: false` makes the template close the thought in
    the prompt: the same longer prompt and the same text in process, through a remote
    front and on vLLM's own server. Here the sample is all answer; vLLM's `deepseek_r1`
    parser, which does not look at the prompt, calls it thinking (a known difference,
    docs/api/vllm-compatibility.md)."""
    remote = await RemoteVLLMEngine.connect(
        [thinking_server], model_path=str(reasoning_model_path), reasoning_parser="deepseek_r1"
    )
    body = {
        "model": TINY_REASONING_NAME,
        "messages": CHAT,
        **SEEDED,
        "chat_template_kwargs": {"enable_thinking": False},
    }
    try:
        async with serving_engine(remote) as remote_url, httpx.AsyncClient(timeout=120) as client:
            replies = [
                (await client.post(f"{base}/v1/chat/completions", json=body)).json()
                for base in (thinker_url, remote_url, thinking_server)
            ]
            thinking = await client.post(
                f"{thinker_url}/v1/chat/completions", json={**body, "chat_template_kwargs": {}}
            )
    finally:
        await remote.close()
    prompts = {reply["usage"]["prompt_tokens"] for reply in replies}
    assert len(prompts) == 1  # the same rendered prompt everywhere
    assert prompts.pop() > thinking.json()["usage"]["prompt_tokens"]  # the closed thought
    ours = [reply["choices"][0]["message"] for reply in replies[:2]]
    theirs = replies[2]["choices"][0]["message"]
    assert all(message["content"] and not message["reasoning"] for message in ours)
    assert {message["content"] for message in ours} == {theirs["reasoning"]}
