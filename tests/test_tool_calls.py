"""Tool calls without a model: what a chat request's `tools` and `tool_choice` ask for,
vLLM's refusals on a server that reads no calls, how a response shows calls, and how a
sample's parsed calls answer a `tool_call` vote. Through the real engine and parser:
`test_tool_calls_engine.py` and the tool rows of `test_vllm_parity.py`."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ttscale.engine.types import Sample, ToolCall, ToolCalling
from ttscale.server.api.responses import AssistantMessage
from ttscale.server.api.schemas import ChatCompletionRequest
from ttscale.server.api.shown import Shown
from ttscale.strategies.errors import InvalidRequest
from ttscale.strategies.registry import discover
from ttscale.strategies.service import Choice, Service, ServiceLimits
from ttscale.strategies.strategy_choice import StrategyChoice
from ttscale.verifiers.structured import AnswerFormat

from .support.fakes import Scripted, ScriptedEngine
from .test_service import request, service

WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
NAMED = {"type": "function", "function": {"name": "weather"}}


def chat(**fields) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "Weather in Oslo?"}]}
    return ChatCompletionRequest.model_validate({**body, **fields})


def test_tools_without_a_choice_let_the_model_call_them():
    calling = chat(tools=[WEATHER]).tool_calling()
    assert calling is not None and calling.choice == "auto" and not calling.forced
    assert calling.tools == (WEATHER,)


def test_tool_choice_none_leaves_the_reply_text():
    assert chat(tools=[WEATHER], tool_choice="none").tool_calling() is None
    assert chat().tool_calling() is None


def test_a_named_tool_choice_forces_that_function_one_call_when_parallel_is_off():
    calling = chat(tools=[WEATHER], tool_choice=NAMED, parallel_tool_calls=False).tool_calling()
    assert calling is not None
    assert (calling.choice, calling.function, calling.parallel) == ("function", "weather", False)
    assert calling.api_choice() == NAMED
    assert chat(
        tools=[WEATHER], tool_choice=NAMED
    ).sampling_spec().tool_calling == calling.model_copy(update={"parallel": True})


@pytest.mark.parametrize(
    ("fields", "message", "param"),
    [
        ({"tools": []}, "`tools` must not be an empty array", "tools"),
        (
            {"tool_choice": "required"},
            "When using `tool_choice`, `tools` must be set.",
            "tool_choice",
        ),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "does not match any of the specified `tools`",
            "tool_choice",
        ),
        (  # vLLM's rule: a named call and a structured output constraint exclude each other
            {"tools": [WEATHER], "tool_choice": NAMED, "response_format": {"type": "json_object"}},
            "either use constraints for structured outputs or tools, not both",
            "tool_choice",
        ),
    ],
)
def test_vllms_rules_for_tools(fields, message, param):
    with pytest.raises(InvalidRequest, match=message) as refused:
        chat(**fields).sampling_spec()
    assert refused.value.param == param


@pytest.mark.parametrize(
    ("fields", "message"),
    [  # vLLM's server without --tool-call-parser, word for word
        (
            {"tools": [WEATHER]},
            '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser '
            "to be set",
        ),
        (
            {"tools": [WEATHER], "tool_choice": "required"},
            'tool_choice="required" requires --tool-call-parser to be set',
        ),
        (
            {"tools": [WEATHER], "tool_choice": NAMED},
            'tool_choice=function "weather" requires --tool-call-parser to be set',
        ),
    ],
)
async def test_a_server_without_a_tool_call_parser_refuses_calls_as_vllms_does(
    grader, fields, message
):
    engine = ScriptedEngine(lambda prompt, spec, index: Scripted("sunny"))
    svc, _ = service(engine, grader)
    sampling = chat(**fields).sampling_spec()
    with pytest.raises(InvalidRequest) as refused:
        await svc.prepare(request(sampling=sampling))
    assert str(refused.value) == message and refused.value.param == "tool_choice"
    assert engine.calls == []  # refused before any sample


@pytest.mark.parametrize("strategy", ["step_search", "particle_filtering", "budget_forcing"])
async def test_strategies_drawing_steps_refuse_tool_calls(grader, strategy):
    """Calls are read from whole samples; a step is a piece of one."""
    engine = ScriptedEngine(lambda prompt, spec, index: Scripted("x"), reasoning=True)
    engine.info = dataclasses.replace(engine.info, tool_call_parser="hermes")
    svc = Service(engine, service(engine, grader)[0].verifiers, discover(), ServiceLimits())
    sampling = chat(tools=[WEATHER], tool_choice="required").sampling_spec()
    params = {"verifier": "prm"} if strategy != "budget_forcing" else {}
    choice = StrategyChoice(strategy=strategy, params=params)
    with pytest.raises(InvalidRequest) as refused:
        await svc.prepare(request(sampling=sampling, choice=choice))
    assert refused.value.param == "tool_choice"


def test_a_samples_parsed_calls_are_its_answer():
    calls = [ToolCall("call-1", "weather", '{"city": "Oslo"}')]
    sample = Sample(0, '<tool_call>{"name": "weather"...', [1, 2], "stop", content="")
    sample.tool_calls = calls
    assert json.loads(sample.answer_text) == [{"name": "weather", "arguments": {"city": "Oslo"}}]
    answer = AnswerFormat(kind="tool_call").extract(sample.answer_text)
    assert answer == AnswerFormat(kind="tool_call").extract(
        '{"arguments": {"city": "Oslo"}, "name": "weather"}'
    )  # one call answers as that call, whatever the key order
    sample.tool_calls = [*calls, ToolCall("call-2", "weather", '{"city": "Lima"}')]
    two = AnswerFormat(kind="tool_call").extract(sample.answer_text)
    assert two is not None and json.loads(two)[1]["arguments"] == {"city": "Lima"}
    sample.tool_calls = []  # read, and none made: the text answers
    assert sample.answer_text == ""


CALL = ToolCall("call-1", "weather", '{"city": "Oslo"}')


@pytest.mark.parametrize(
    ("tool_choice", "calls", "finish", "shown_finish", "content"),
    [  # vLLM's server: what the model chose to call finishes "tool_calls" ...
        ("auto", [CALL], "stop", "tool_calls", None),
        ("auto", [], "stop", "stop", "hello"),
        # ... as does a required call that finished; a named one finishes "stop"
        ("required", [CALL], "stop", "tool_calls", ""),
        ("required", [], "length", "length", ""),
        ("function", [CALL], "stop", "stop", ""),
    ],
)
def test_a_response_shows_calls_as_vllms_server_does(
    tool_choice, calls, finish, shown_finish, content
):
    text = "hello" if not calls and tool_choice == "auto" else ""
    choice = Choice(index=0, text=text, finish_reason=finish, content=text, tool_calls=calls)
    shown = Shown(tool_choice=tool_choice)
    message = AssistantMessage.of(choice, shown)
    assert shown.finish_reason_of(choice) == shown_finish
    assert message.content == content
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []] == [
        (c.id, c.name, c.arguments) for c in calls
    ]


def test_a_request_without_tool_calling_shows_no_calls_field():
    message = AssistantMessage.of(Choice(index=0, text="hi", finish_reason="stop"))
    assert message.tool_calls is None and message.content == "hi"


def test_tool_calling_names_its_function_exactly_when_it_is_named():
    with pytest.raises(ValueError, match="names its function"):
        ToolCalling(tools=(WEATHER,), choice="function")
    with pytest.raises(ValueError, match="names its function"):
        ToolCalling(tools=(WEATHER,), choice="auto", function="weather")
