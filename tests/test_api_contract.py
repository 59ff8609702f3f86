"""The OpenAPI description says what the server does: schemathesis sends requests generated
from it to the real server (tiny model) with every check on, and finds nothing; the
defects it found before are pinned here one by one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from .support.fuzz_api import run_schemathesis
from .support.servers import serving_engine
from .support.tiny_models import TINY_MODEL_NAME

CHEAP = {"max_n": 2, "max_request_tokens": 64, "default_max_tokens": 8, "grading_deadline_s": 2}


async def test_schemathesis_finds_no_failure_with_every_check_on(engine):
    async with serving_engine(engine, **CHEAP) as url:
        summary = await asyncio.to_thread(run_schemathesis, url, max_examples=50, seed=7)
    assert summary.ok, summary.describe()
    assert summary.cases >= 100


@pytest.fixture(scope="module")
async def served(engine) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, Any]]]:
    async with serving_engine(engine, **CHEAP) as url, httpx.AsyncClient(base_url=url) as http:
        yield http, (await http.get("/openapi.json")).json()


def _request_fields(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return schema["components"]["schemas"][name]["properties"]


async def test_integer_bounds_are_stated_exactly_as_integers(served):
    _, schema = served
    seed = _request_fields(schema, "CompletionRequest")["seed"]["anyOf"][0]
    assert seed["exclusiveMaximum"] == 2**63 and isinstance(seed["exclusiveMaximum"], int)

    def keywords(node: Any) -> set[str]:
        if isinstance(node, dict):
            return set(node) | {k for value in node.values() for k in keywords(value)}
        if isinstance(node, list):
            return {k for value in node for k in keywords(value)}
        return set()

    assert not keywords(schema) & {"ge", "gt", "le", "lt"}  # pydantic's names, not JSON Schema's


async def test_empty_prompts_and_stop_sequences_are_refused_by_the_description_too(served):
    http, schema = served
    prompt = _request_fields(schema, "CompletionRequest")["prompt"]["anyOf"]
    assert {"minLength": 1}.items() <= prompt[0].items() and prompt[1]["minItems"] == 1
    stop = _request_fields(schema, "CompletionRequest")["stop"]["anyOf"]
    assert stop[0]["minLength"] == 1 and stop[1]["items"]["minLength"] == 1
    for body in ({"prompt": []}, {"prompt": "hi", "stop": [""]}):
        reply = await http.post("/v1/completions", json={"model": TINY_MODEL_NAME, **body})
        assert reply.status_code == 400


@pytest.mark.parametrize(("n", "status"), [(2.0, 200), (2.5, 400), (True, 400), ("2", 400)])
async def test_an_integral_json_number_is_an_integer_and_nothing_else_is(served, n, status):
    """JSON Schema calls 2.0 an integer, so the server does too; true and "2" are not."""
    http, _ = served
    body = {"model": TINY_MODEL_NAME, "prompt": "hi", "max_tokens": 2, "n": n}
    assert (await http.post("/v1/completions", json=body)).status_code == status


async def test_each_streamed_event_is_described(served):
    _, schema = served
    stream = schema["paths"]["/v1/completions"]["post"]["responses"]["200"]["content"]
    event = stream["text/event-stream"]["itemSchema"]
    assert event["required"] == ["data"] and event["properties"]["data"]["type"] == "string"


def test_template_variables_merge_as_vllm_merges_them():
    """Request fields that are template variables win over `chat_template_kwargs`; a
    reasoning effort turns thinking on or off unless the client said otherwise."""
    from ttscale.server.api.schemas import ChatCompletionRequest

    def variables(**fields):
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
        return ChatCompletionRequest.model_validate(body).template_variables()

    assert variables() == {}
    assert variables(reasoning_effort="none") == {
        "reasoning_effort": "none",
        "enable_thinking": False,
    }
    assert variables(reasoning_effort="high", chat_template_kwargs={"enable_thinking": False}) == {
        "reasoning_effort": "high",
        "enable_thinking": False,
    }
    docs = [{"title": "t", "text": "x"}]
    assert variables(documents=docs, chat_template_kwargs={"documents": []})["documents"] == docs
