"""Tool calls through the real engine and vLLM's hermes parser: samples drawn with tools
are constrained to calls and read back as calls, and a strategy votes on the parsed
calls. The tiny model's weights are random, so which city it picks is arbitrary; that it
calls the offered function with arguments its schema allows is not.

Whitespace is biased away (`logit_bias`): a JSON grammar lets random weights pad the
arguments with blanks until the length runs out."""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from ttscale.engine.model_store import ensure_default_model

from .support.servers import reading_tool_calls, serving_engine
from .support.tiny_models import TINY_MODEL_NAME

CITIES = ["Oslo", "Lima", "Kyiv"]
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"city": {"enum": CITIES}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
CHAT = [{"role": "user", "content": "Where is it warmest today?"}]


@functools.cache
def no_whitespace() -> dict[str, float]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ensure_default_model())
    return {str(i): -100.0 for i in range(len(tokenizer)) if not tokenizer.decode([i]).strip()}


@pytest.fixture(scope="module")
async def url(engine) -> AsyncIterator[str]:
    async with serving_engine(reading_tool_calls(engine)) as base:
        yield base


def body(**fields: Any) -> dict[str, Any]:
    return {
        "model": TINY_MODEL_NAME,
        "messages": CHAT,
        "tools": [WEATHER],
        "tool_choice": "required",
        "parallel_tool_calls": False,  # one call, then the grammar lets the sample end
        "max_tokens": 80,
        "temperature": 1.0,
        "seed": 3,
        "logit_bias": no_whitespace(),
        **fields,
    }


def is_weather_call(answer: str) -> bool:
    call = json.loads(answer)
    return call["name"] == "weather" and call["arguments"]["city"] in CITIES


async def test_self_consistency_votes_on_parsed_tool_calls(url):
    request = body(
        ttscale={
            "strategy": "self_consistency",
            "params": {"n": 6, "answer": {"kind": "tool_call"}},
            "include_text": True,
        }
    )
    async with httpx.AsyncClient(timeout=180) as client:
        response = await client.post(f"{url}/v1/chat/completions", json=request)
    assert response.status_code == 200, response.text
    reply = response.json()
    evidence = reply["ttscale"]
    answered = [c for c in evidence["candidates"] if c["answer"] is not None]
    finished = [c for c in evidence["candidates"] if c["finish_reason"] == "stop"]
    assert len(evidence["candidates"]) == 6 and len(finished) >= 4
    assert all(c in answered for c in finished)  # every finished sample is a call
    assert all(is_weather_call(c["answer"]) for c in answered)  # in the offered schema
    tally = Counter(c["answer"] for c in answered)
    winner, count = tally.most_common(1)[0]
    assert evidence["answer"] == winner and evidence["votes"][winner] == count
    choice = reply["choices"][0]
    (call,) = choice["message"]["tool_calls"]  # the pick's call, as a client reads it
    assert call["type"] == "function" and call["id"]
    picked = {
        "name": call["function"]["name"],
        "arguments": json.loads(call["function"]["arguments"]),
    }
    assert json.loads(winner) == picked
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == ""


async def test_the_openai_client_reads_named_calls(url):
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused")
    completion = await client.chat.completions.create(
        model=TINY_MODEL_NAME,
        messages=CHAT,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "weather"}},
        max_tokens=80,
        temperature=1.0,
        seed=5,
        n=3,
        logit_bias=no_whitespace(),
    )
    calls = [c.message.tool_calls for c in completion.choices if c.finish_reason == "stop"]
    assert calls, [c.message for c in completion.choices]
    for made in calls:  # a named function finishes "stop", as on vLLM's server
        assert made is not None and len(made) == 1 and made[0].function.name == "weather"
        assert json.loads(made[0].function.arguments)["city"] in CITIES


async def test_a_stream_carries_the_calls_and_their_finish_reason(url):
    calls: dict[int, list[dict[str, Any]]] = {}
    finishes: dict[int, str] = {}
    async with (
        httpx.AsyncClient(timeout=180) as client,
        client.stream("POST", f"{url}/v1/chat/completions", json=body(stream=True, n=3)) as stream,
    ):
        async for line in stream.aiter_lines():
            if not line.startswith("data: {"):
                continue
            for choice in json.loads(line.removeprefix("data: "))["choices"]:
                index = choice["index"]
                calls.setdefault(index, []).extend(choice["delta"].get("tool_calls", []))
                if choice["finish_reason"]:
                    finishes[index] = choice["finish_reason"]
    assert sorted(finishes) == [0, 1, 2] and set(finishes.values()) <= {"tool_calls", "length"}
    called = [index for index, reason in finishes.items() if reason == "tool_calls"]
    assert called, finishes
    for index in called:  # one whole call, in the delta of the text before it
        (call,) = calls[index]
        assert call["index"] == 0 and call["function"]["name"] == "weather"
        assert json.loads(call["function"]["arguments"])["city"] in CITIES


def test_a_tool_call_parser_is_checked_at_start_up(subprocess_env):
    from .test_cli import assert_one_line_error, run_cli

    unknown = run_cli("serve", "--tool-call-parser", "no_such_parser", env=subprocess_env)
    assert_one_line_error(unknown, "unknown tool-call parser 'no_such_parser'")
    alone = run_cli("serve", "--enable-auto-tool-choice", env=subprocess_env)
    assert_one_line_error(alone, "--enable-auto-tool-choice needs --tool-call-parser")
    remote = run_cli(
        "serve", "--engine", "remote", "--remote-url", "http://127.0.0.1:9",
        "--tool-call-parser", "hermes", env=subprocess_env,
    )  # fmt: skip
    assert_one_line_error(remote, "needs --model DIR")
