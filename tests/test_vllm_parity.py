"""The drop-in contract: a client written for vLLM's OpenAI server gets the same answers
from ttscale. Each request of the table goes to vLLM's own server and to ttscale over the
same model, in process and remotely (in front of that very server): the same status, the
same text, finish reason and token counts, and for a bad value the same refusal naming
the same field. Outputs that must match are greedy or seeded.

A field vLLM adds later and ttscale does not accept shows up here as a difference to
decide on (see `test_every_vllm_field_is_served_or_refused_by_name`)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import vllm.sampling_params  # noqa: F401  (at collection: importing vLLM runs `file` once)

from ttscale.engine.model_store import ensure_default_model
from ttscale.engine.remote import RemoteVLLMEngine
from ttscale.server.api.schemas import ChatCompletionRequest, CompletionRequest
from ttscale.server.api.vllm_fields import NOT_SERVED, NOT_YET_SERVED

from .support.servers import reading_tool_calls, serving_engine, vllm_api_server
from .support.tiny_models import TINY_MODEL_NAME

TOOL_PARSING = ["--tool-call-parser", "hermes", "--enable-auto-tool-choice"]
"""Both servers read tool calls with vLLM's hermes parser (the model's template shows
tools; a random model calls them only where the constraint makes it)."""

CHAT = [{"role": "user", "content": "Name three colours."}]
SEEDED = {"temperature": 1.0, "seed": 11, "max_tokens": 12}
GREEDY = {"temperature": 0.0, "max_tokens": 12}
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
STRICT = {
    "type": "function",
    "function": {
        "name": "weather",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"city": {"enum": ["Oslo", "Lima"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
NAMED = {"type": "function", "function": {"name": "weather"}}
CALLS = {"temperature": 0.0, "max_tokens": 40}
CALLED = [
    *CHAT,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call-1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call-1", "content": "Grey."},
]


@dataclass(frozen=True)
class Case:
    name: str
    fields: dict[str, Any]
    endpoint: str = "chat"
    extra: dict[str, Any] = field(default_factory=dict)
    calls: bool = False
    """The request is made to call a tool: vLLM's reply has calls (whitespace, which a
    random model pads JSON with until its length runs out, is biased away; a sample may
    still run out)."""

    def body(self) -> dict[str, Any]:
        prompt = {"messages": CHAT} if self.endpoint == "chat" else {"prompt": "Colours:"}
        biased = {"logit_bias": whitespace_bias()} if self.calls else {}
        return {"model": TINY_MODEL_NAME, **prompt, **self.fields, **biased}

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.endpoint == "chat" else "/v1/completions"


@functools.cache
def whitespace_bias() -> dict[str, float]:
    """-100 on every token of the tiny model's vocabulary that is only whitespace."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ensure_default_model())
    blank = [i for i in range(len(tokenizer)) if not tokenizer.decode([i]).strip()]
    return {str(i): -100.0 for i in blank}


CASES = [
    Case("greedy", GREEDY),
    Case("seeded", SEEDED),
    Case("seeded text completion", SEEDED, endpoint="text"),
    Case("several choices", {**SEEDED, "n": 3}),
    Case("top_k", {**SEEDED, "top_k": 3}),
    Case("top_k -1 means all", {**SEEDED, "top_k": -1}),
    Case("top_p", {**SEEDED, "top_p": 0.5}),
    Case("min_p", {**SEEDED, "min_p": 0.3}),
    Case("repetition_penalty", {**GREEDY, "repetition_penalty": 1.8}),
    Case("presence and frequency penalties", {**SEEDED, "presence_penalty": 1.5}),
    Case("min_tokens with an early stop token", {**GREEDY, "min_tokens": 10}),
    Case("ignore_eos", {**GREEDY, "ignore_eos": True, "max_tokens": 20}),
    Case("logit_bias", {**GREEDY, "logit_bias": {"100": 100}}),
    Case("allowed_token_ids", {**SEEDED, "allowed_token_ids": [100, 101, 102]}),
    Case("bad_words", {**GREEDY, "bad_words": ["the", "a"]}),
    Case("stop_token_ids", {**SEEDED, "stop_token_ids": [100, 101]}),
    Case("stop strings, kept", {**SEEDED, "stop": ["e"], "include_stop_str_in_output": True}),
    Case("special tokens kept", {**SEEDED, "skip_special_tokens": False}),
    Case("no spaces between special tokens", {**SEEDED, "spaces_between_special_tokens": False}),
    Case("choice", {**SEEDED, "structured_outputs": {"choice": ["red", "green", "blue"]}}),
    Case("regex", {**SEEDED, "structured_outputs": {"regex": "[ab]{3}-[0-9]{2}"}}),
    Case(
        "json schema",
        {
            **SEEDED,
            "max_tokens": 40,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "colour",
                    "schema": {
                        "type": "object",
                        "properties": {"colour": {"enum": ["red", "blue"]}},
                        "required": ["colour"],
                        "additionalProperties": False,
                    },
                },
            },
        },
    ),
    Case("json object", {**SEEDED, "response_format": {"type": "json_object"}}),
    Case("chat_template_kwargs", {**GREEDY, "chat_template_kwargs": {"unused_flag": True}}),
    Case(
        "request fields win over template variables",
        {**GREEDY, "chat_template_kwargs": {"add_generation_prompt": False}},
    ),
    Case("reasoning_effort", {**GREEDY, "reasoning_effort": "low"}),
    Case("documents", {**GREEDY, "documents": [{"title": "Sky", "text": "It is blue."}]}),
    Case("no generation prompt", {**GREEDY, "add_generation_prompt": False}),
    Case(
        "continue the final message",
        {**GREEDY, "add_generation_prompt": False, "continue_final_message": True},
        extra={"messages": [*CHAT, {"role": "assistant", "content": "Red,"}]},
    ),
    Case("add_special_tokens", {**GREEDY, "add_special_tokens": True}),
    Case("user", {**GREEDY, "user": "someone"}),
    Case("request_id", {**GREEDY, "request_id": "my-request-7"}),
    Case("text request_id", {**GREEDY, "request_id": "my-request-8"}, endpoint="text"),
    Case("chat logprobs", {**SEEDED, "logprobs": True, "top_logprobs": 3}),
    Case("chat logprobs of the sampled tokens only", {**SEEDED, "logprobs": True}),
    Case("text logprobs", {**SEEDED, "logprobs": 2}, endpoint="text"),
    Case("text logprobs of the sampled tokens", {**GREEDY, "logprobs": 0}, endpoint="text"),
    Case("logprobs of several choices", {**SEEDED, "n": 2, "logprobs": True, "top_logprobs": 1}),
    Case("echo", {**SEEDED, "echo": True}, endpoint="text"),
    Case("chat token ids", {**SEEDED, "n": 2, "return_token_ids": True}),
    Case("text token ids", {**SEEDED, "return_token_ids": True}, endpoint="text"),
    Case(
        "echo with token ids",
        {**SEEDED, "echo": True, "return_token_ids": True},
        endpoint="text",
    ),
    Case(
        "chat echo continues the last message",
        {**GREEDY, "echo": True, "add_generation_prompt": False, "continue_final_message": True},
        extra={"messages": [*CHAT, {"role": "assistant", "content": "Red,"}]},
    ),
    Case("chat echo of a user message shows nothing more", {**GREEDY, "echo": True}),
    Case("echo with logprobs", {**GREEDY, "echo": True, "logprobs": 1}, endpoint="text"),
    Case(
        "score the prompt (echo, max_tokens 0)",
        {"temperature": 0.0, "echo": True, "max_tokens": 0, "logprobs": 1},
        endpoint="text",
    ),
    Case("chat prompt_logprobs", {**GREEDY, "prompt_logprobs": 2}),
    Case("tools shown, no call asked", {**GREEDY, "tools": [WEATHER], "tool_choice": "none"}),
    Case(
        "a conversation with a tool call and its result",
        {**GREEDY, "tools": [WEATHER], "tool_choice": "none"},
        extra={"messages": CALLED},
    ),
    Case("text prompt_logprobs", {**SEEDED, "prompt_logprobs": 0}, endpoint="text"),
    Case("cache_salt and session_id", {**SEEDED, "cache_salt": "t-1", "session_id": "s-1"}),
    Case(
        "cache_salt and session_id, text",
        {**SEEDED, "cache_salt": "t-1", "session_id": "s-1"},
        endpoint="text",
    ),
    Case("the rendered prompt", {**GREEDY, "return_prompt_text": True}),
    Case(
        "options vLLM takes and ignores here",
        {**GREEDY, "return_token_offsets": True, "stream_interval": 4},
        endpoint="text",
    ),
    Case(
        "the rendered prompt, with tools",
        {**GREEDY, "return_prompt_text": True, "tools": [WEATHER], "tool_choice": "none"},
    ),
    Case(
        "repetition detection",
        {
            **GREEDY,
            "max_tokens": 60,
            "repetition_detection": {"max_pattern_size": 4, "min_count": 3},
        },
    ),
    Case(
        "repetition detection, text",
        {
            **GREEDY,
            "max_tokens": 60,
            "repetition_detection": {"max_pattern_size": 4, "min_count": 3},
        },
        endpoint="text",
    ),
    Case("a truncated prompt", {**SEEDED, "truncate_prompt_tokens": 5}),
    Case(
        "a prompt truncated from the left",
        {**SEEDED, "truncate_prompt_tokens": 5, "truncation_side": "left"},
    ),
    Case(
        "a text prompt truncated from the right",
        {**SEEDED, "truncate_prompt_tokens": 2, "truncation_side": "right"},
        endpoint="text",
    ),
    Case("truncation to the context less one", {**SEEDED, "truncate_prompt_tokens": -1}),
    # tool calls, constrained and read by the servers' hermes parser
    Case("tools, the model may call (auto)", {**GREEDY, "tools": [WEATHER]}),
    Case("required tool calls", {**CALLS, "tools": [WEATHER], "tool_choice": "required"}),
    Case("a named tool", {**CALLS, "tools": [WEATHER], "tool_choice": NAMED}),
    Case("a named strict tool", {**CALLS, "tools": [STRICT], "tool_choice": NAMED}, calls=True),
    Case(
        "one call at most",
        {**CALLS, "tools": [STRICT], "tool_choice": "required", "parallel_tool_calls": False},
        calls=True,
    ),
    Case(
        "required calls, seeded",
        {**SEEDED, "max_tokens": 40, "tools": [STRICT], "tool_choice": "required", "n": 3},
        calls=True,
    ),
    # refusals: the same status, naming the same field
    Case("priority without priority scheduling", {**GREEDY, "priority": 1}),
    Case("a token id out of the vocabulary", {**GREEDY, "allowed_token_ids": [10**7]}),
    Case("a logit bias on no token", {**GREEDY, "logit_bias": {"x": 1}}),
    Case("two constraints", {**GREEDY, "structured_outputs": {"regex": "a", "choice": ["a"]}}),
    Case("json_schema without a schema", {**GREEDY, "response_format": {"type": "json_schema"}}),
    Case("a penalty of zero", {**GREEDY, "repetition_penalty": 0}),
    Case("top_k below -1", {**GREEDY, "top_k": -2}),
    Case("top_logprobs without logprobs", {**GREEDY, "top_logprobs": 2}),
    Case("more logprobs than the engine keeps", {**GREEDY, "logprobs": True, "top_logprobs": 25}),
    Case("logprobs below -1", {**GREEDY, "logprobs": -2}, endpoint="text"),
    Case("max_tokens 0 without echo", {"max_tokens": 0}, endpoint="text"),
    Case(
        "a named tool with a structured output",
        {**GREEDY, "tools": [WEATHER], "tool_choice": NAMED, "structured_outputs": {"regex": "a"}},
    ),
    Case("an empty cache_salt", {**GREEDY, "cache_salt": ""}),
    Case("a suffix (fill in the middle)", {**GREEDY, "suffix": " end."}, endpoint="text"),
    Case("a stream interval of zero", {**GREEDY, "stream_interval": 0, "stream": True}),
    Case(
        "repetition counted once",
        {**GREEDY, "repetition_detection": {"max_pattern_size": 2, "min_count": 1}},
    ),
    Case("truncation past the context", {**GREEDY, "truncate_prompt_tokens": 5000}),
    Case("truncation below -1", {**GREEDY, "truncate_prompt_tokens": -2}),
    Case("a truncation side that is none", {**GREEDY, "truncation_side": "middle"}),
    Case(
        "a named tool that is not offered",
        {
            **GREEDY,
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "clock"}},
        },
    ),
    Case("tool_choice without tools", {**GREEDY, "tool_choice": "required"}),
    Case("no tools", {**GREEDY, "tools": []}),
    Case("prompt_logprobs in a stream", {**GREEDY, "prompt_logprobs": 1, "stream": True}),
    Case("min_p above 1", {**GREEDY, "min_p": 1.5}),
    Case("min_tokens above max_tokens", {**GREEDY, "min_tokens": 20}),
    Case(
        "both ways to end a chat",
        {**GREEDY, "continue_final_message": True},
        extra={"messages": [*CHAT, {"role": "assistant", "content": "Red,"}]},
    ),
]


@pytest.fixture(scope="module")
def vllm_url(tiny_model_path: Path, starts_vllm, subprocess_env, tmp_path_factory) -> Iterator[str]:
    args = [
        "--model",
        str(tiny_model_path),
        "--served-model-name",
        TINY_MODEL_NAME,
        "--max-model-len",
        "1024",
        "--dtype",
        "float32",
        "--no-enable-chunked-prefill",
        *TOOL_PARSING,
    ]
    with vllm_api_server(args, subprocess_env, tmp_path_factory.mktemp("parity")) as url:
        yield url


@pytest.fixture(scope="module")
async def in_process_url(engine) -> AsyncIterator[str]:
    async with serving_engine(reading_tool_calls(engine)) as url:
        yield url


@pytest.fixture(scope="module")
async def remote_url(vllm_url: str, tiny_model_path: Path) -> AsyncIterator[str]:
    remote = await RemoteVLLMEngine.connect(
        [vllm_url],
        model_path=str(tiny_model_path),
        tool_call_parser="hermes",
        auto_tool_choice=True,
    )
    try:
        async with serving_engine(remote) as url:
            yield url
    finally:
        await remote.close()


def essence(response: httpx.Response) -> dict[str, Any]:
    """What a client reads of a response: status, then the choices, token counts and
    log-probabilities (the numbers apart, under "values"), or the field the error names."""
    body = response.json()
    if response.status_code != 200:
        # vLLM names a field its request model refuses `body.FIELD` (FastAPI's location),
        # one its checks refuse `FIELD`; ttscale names both `FIELD`
        param = body["error"].get("param")
        return {"status": response.status_code, "param": param and param.removeprefix("body.")}
    choices = [
        (c["message"]["content"] if "message" in c else c["text"], c["finish_reason"])
        for c in body["choices"]
    ]
    calls = [  # their ids are random
        [(t["function"]["name"], t["function"]["arguments"]) for t in _calls(c)]
        for c in body["choices"]
    ]
    usage = body["usage"]
    counts = (usage["prompt_tokens"], usage["completion_tokens"])
    ids = [body.get("prompt_token_ids")] + [
        (c.get("prompt_token_ids"), c.get("token_ids")) for c in body["choices"]
    ]
    values: list[float] = []
    shown = [_logprob_tokens(c.get("logprobs"), values) for c in body["choices"]]
    scored = [body.get("prompt_logprobs")] + [c.get("prompt_logprobs") for c in body["choices"]]
    prompt = [_prompt_tokens(p, values) for p in scored]
    given = "my-request-" in body["id"]  # a request_id the client gave: the id is built on it
    return {
        "status": 200,
        "id": body["id"] if given else None,
        "choices": choices,
        "tool_calls": calls,
        "prompt_text": body.get("prompt_text"),
        "tokens": counts,
        "logprobs": shown,
        "prompt_logprobs": prompt,
        "token_ids": ids,
        "values": values,
    }


def _calls(choice: dict[str, Any]) -> list[dict[str, Any]]:
    """A chat choice's tool calls (vLLM writes an empty list where there are none)."""
    return (choice.get("message") or {}).get("tool_calls") or []


def _prompt_tokens(positions: list[dict[str, Any] | None] | None, values: list[float]) -> Any:
    """The tokens of a `prompt_logprobs` field (ids, ranks, decoded); numbers to `values`."""
    if positions is None:
        return None
    shown = []
    for position in positions:
        entries = list((position or {}).items())
        values.extend(entry["logprob"] for _, entry in entries)
        shown.append([(key, entry["rank"], entry["decoded_token"]) for key, entry in entries])
    return shown


def _logprob_tokens(logprobs: dict[str, Any] | None, values: list[float]) -> Any:
    """The tokens of a choice's `logprobs`, in their structure; the numbers go to
    `values`, compared within float tolerance."""
    if logprobs is None:
        return None
    if "content" in logprobs:  # chat
        shown = []
        for position in logprobs["content"]:
            values.append(position["logprob"])
            values.extend(top["logprob"] for top in position["top_logprobs"])
            tops = [(top["token"], top["bytes"]) for top in position["top_logprobs"]]
            shown.append((position["token"], position["bytes"], tops))
        return shown
    values.extend(v for v in logprobs["token_logprobs"] if v is not None)
    for top in logprobs["top_logprobs"]:
        values.extend((top or {}).values())
    tops = [None if top is None else list(top) for top in logprobs["top_logprobs"]]
    nones = [v is None for v in logprobs["token_logprobs"]]
    return (logprobs["tokens"], logprobs["text_offset"], tops, nones)


async def ask(client: httpx.AsyncClient, base: str, case: Case) -> dict[str, Any]:
    response = await client.post(base + case.path, json={**case.body(), **case.extra})
    return essence(response)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_ttscale_answers_as_vllms_server_does(case, vllm_url, in_process_url, remote_url):
    async with httpx.AsyncClient(timeout=120) as client:
        expected = await ask(client, vllm_url, case)
        in_process = await ask(client, in_process_url, case)
        remote = await ask(client, remote_url, case)
    if expected["status"] != 200 and expected["param"] is None:
        for ours in (in_process, remote):  # vLLM names no field here: any field will do
            ours["param"] = None
    values = expected.pop("values", [])
    if case.calls:  # the row shows what it is for: calls, read alike
        assert any(expected["tool_calls"]), expected
    for ours in (in_process, remote):
        assert ours.pop("values", []) == pytest.approx(values, abs=1e-4)
        assert ours == expected


@pytest.mark.parametrize("ours", [ChatCompletionRequest, CompletionRequest])
def test_every_vllm_field_is_served_or_refused_by_name(ours):
    """Each field of vLLM's request is a field here or one refused with a reason; the
    fields still to come are listed, so that a new vLLM field needs a decision."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest as Chat
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest as Text

    theirs = Chat if ours is ChatCompletionRequest else Text
    undecided = set(theirs.model_fields) - set(ours.model_fields) - set(NOT_SERVED) - NOT_YET_SERVED
    assert not undecided, f"vLLM fields with no decision here: {sorted(undecided)}"
