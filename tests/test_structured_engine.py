"""Test-time scaling over structured answers, through the real engine: vLLM's structured
outputs make every sample parse, and the strategy votes on the parsed answer. The tiny
model's weights are random, so what it picks is arbitrary; what it may write is not."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from .support.servers import serving_engine
from .support.tiny_models import TINY_MODEL_NAME

CHAT = [{"role": "user", "content": "Which colour is the sky?"}]
COLOURS = ["red", "green", "blue"]
SCHEMA = {
    "type": "object",
    "properties": {"colour": {"enum": COLOURS}, "sure": {"type": "boolean"}},
    "required": ["colour", "sure"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
async def url(engine) -> AsyncIterator[str]:
    async with serving_engine(engine) as base:
        yield base


async def vote(url: str, sampling: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    body = {
        "model": TINY_MODEL_NAME,
        "messages": CHAT,
        "max_tokens": 60,
        "ttscale": {
            "strategy": "self_consistency",
            "params": {"n": 6, "answer": answer},
            "include_text": True,
        },
        **sampling,
    }
    async with httpx.AsyncClient(timeout=180) as client:
        response = await client.post(f"{url}/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def tally(evidence: dict[str, Any]) -> Counter[str]:
    return Counter(c["answer"] for c in evidence["candidates"] if c["answer"] is not None)


COMPACT_JSON = r'\{"colour":"(red|green|blue)","sure":(true|false)\}'
"""The schema's objects without whitespace: a JSON Schema lets random weights pad the
object with whitespace until `max_tokens` (vLLM 0.32 takes `disable_any_whitespace` from
the engine's settings only), a pattern does not."""


async def test_constrained_json_samples_all_parse_and_are_voted_by_field(url):
    body = await vote(
        url,
        {"temperature": 1.0, "seed": 5, "structured_outputs": {"regex": COMPACT_JSON}},
        {"kind": "json", "path": "colour"},
    )
    evidence = body["ttscale"]
    candidates = evidence["candidates"]
    assert len(candidates) == 6
    for candidate in candidates:  # the constraint held: every sample is the schema's JSON
        parsed = json.loads(candidate["text"])
        assert set(parsed) == {"colour", "sure"}
        assert candidate["answer"] == json.dumps(parsed["colour"])
    votes = tally(evidence)
    assert sum(votes.values()) == 6
    winner, count = votes.most_common(1)[0]
    assert evidence["answer"] == winner and evidence["votes"][winner] == count
    assert json.dumps(json.loads(body["choices"][0]["message"]["content"])["colour"]) == winner


async def test_json_schema_samples_that_finish_parse_and_vote(url):
    """`response_format` with a JSON Schema: every sample that finished is the schema's
    object, and votes; one cut at `max_tokens` (whitespace padding) has no answer."""
    body = await vote(
        url,
        {
            "temperature": 1.0,
            "seed": 5,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "sky", "schema": SCHEMA},
            },
        },
        {"kind": "json", "path": "colour"},
    )
    for candidate in body["ttscale"]["candidates"]:
        if candidate["finish_reason"] == "stop":
            assert json.loads(candidate["text"])["colour"] in COLOURS
            assert candidate["answer"] in {json.dumps(c) for c in COLOURS}
        else:
            assert candidate["answer"] is None


async def test_a_choice_constraint_is_voted_as_the_choice(url):
    body = await vote(
        url,
        {"temperature": 1.0, "seed": 9, "structured_outputs": {"choice": COLOURS}},
        {"kind": "choice", "options": COLOURS},
    )
    evidence = body["ttscale"]
    assert {c["text"] for c in evidence["candidates"]} <= set(COLOURS)
    assert [c["answer"] for c in evidence["candidates"]] == [
        c["text"] for c in evidence["candidates"]
    ]
    assert body["choices"][0]["message"]["content"] == evidence["answer"]
    assert evidence["votes"][evidence["answer"]] == max(tally(evidence).values())


async def test_a_regex_constraint_is_voted_by_its_capture_group(url):
    body = await vote(
        url,
        {"temperature": 1.0, "seed": 2, "structured_outputs": {"regex": "answer: [ab]"}},
        {"kind": "regex", "pattern": "answer: ([ab])"},
    )
    evidence = body["ttscale"]
    assert all(c["answer"] in ("a", "b") for c in evidence["candidates"])
    assert evidence["answer"] in ("a", "b")


async def test_an_invalid_json_schema_is_a_400_naming_the_field(url):
    """vLLM checks a schema before any sample runs: the same refusal as its server."""
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="none")
    with pytest.raises(Exception) as refused:
        await client.chat.completions.create(
            model=TINY_MODEL_NAME,
            messages=CHAT,
            max_tokens=8,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "bad", "schema": {"type": "no-such-type"}},
            },
        )
    assert getattr(refused.value, "status_code", None) == 400
    await client.close()


async def test_the_openai_client_sends_vllm_fields_unchanged(url):
    """A vLLM client passes vLLM's own fields through `extra_body`: they work here too."""
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="none")
    completion = await client.chat.completions.create(
        model=TINY_MODEL_NAME,
        messages=CHAT,
        max_tokens=12,
        temperature=1.0,
        seed=1,
        extra_body={
            "top_k": 5,
            "min_tokens": 3,
            "repetition_penalty": 1.1,
            "structured_outputs": {"choice": COLOURS},
            "chat_template_kwargs": {"enable_thinking": False},
        },
    )
    assert completion.choices[0].message.content in COLOURS
    await client.close()


async def test_a_strategy_returns_its_picks_logprobs_and_token_ids_when_asked(url):
    """The pick's own log-probabilities, with the client's alternatives per position,
    while the strategy reads as many as it needs (inverse entropy reads 20), and its
    token ids."""
    body = {
        "model": TINY_MODEL_NAME,
        "messages": CHAT,
        "max_tokens": 10,
        "temperature": 1.0,
        "seed": 4,
        "logprobs": True,
        "top_logprobs": 2,
        "return_token_ids": True,
        "structured_outputs": {"choice": COLOURS},
        "ttscale": {
            "strategy": "inverse_entropy",
            "params": {"n": 3, "answer": {"kind": "choice", "options": COLOURS}},
        },
    }
    async with httpx.AsyncClient(timeout=180) as client:
        response = await client.post(f"{url}/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    reply = response.json()
    evidence = reply["ttscale"]
    assert evidence["chosen"] is not None, evidence
    chosen = next(c for c in evidence["candidates"] if c["index"] == evidence["chosen"])
    content = reply["choices"][0]["logprobs"]["content"]
    assert len(content) == chosen["tokens"] == len(reply["choices"][0]["token_ids"])
    assert reply["prompt_token_ids"]
    assert all(len(position["top_logprobs"]) <= 2 for position in content)
    assert all(c["mean_entropy"] is not None for c in evidence["candidates"])
    assert "logprobs" not in chosen  # the evidence stays as it was
