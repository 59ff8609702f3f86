"""`SamplingSpec` declares every sampling field once; the API requests and both engine
adapters follow from it. These tests fail when a field is declared but does not reach
vLLM the same way in process and remotely, or reaches the API under another shape."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

import pytest
import vllm.sampling_params  # noqa: F401  (at collection: importing vLLM runs `file` once)
from pydantic import ValidationError

from ttscale.engine.local_vllm import sampling_params
from ttscale.engine.remote import _completion_body
from ttscale.engine.types import (
    ADAPTER,
    API,
    ConfidenceStop,
    RepetitionDetection,
    SamplingSpec,
    StructuredOutputs,
    ToolCalling,
)
from ttscale.server.api.schemas import ChatCompletionRequest, CompletionRequest

ENGINE_FIELDS = [
    name for name in SamplingSpec.model_fields if name not in SamplingSpec.fields_exposed(ADAPTER)
]


def _other_value(name: str) -> Any:
    """A valid value of field `name` that is not its default, made from its type alone,
    so that a new field needs no entry here."""
    info = SamplingSpec.model_fields[name]
    default = info.default
    annotation = info.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if annotation is bool:
        return not default
    if annotation is int:
        return 1 if default in (None, 0) else default - 1
    if annotation is float:
        return 0.5 if default != 0.5 else 0.25
    if typing.get_origin(annotation) is tuple:
        item = typing.get_args(annotation)[0]
        if typing.get_origin(item) is typing.Annotated:
            item = typing.get_args(item)[0]
        return ("x",) if item is str else (7,)
    if typing.get_origin(annotation) is dict:
        return {7: 0.5}
    if annotation is StructuredOutputs:
        return StructuredOutputs(regex="[ab]+")
    if annotation is RepetitionDetection:
        return RepetitionDetection(max_pattern_size=4, min_count=3)
    if annotation is str:
        return "x"
    raise AssertionError(f"no test value for {name}: {annotation}")


def _as_json(value: Any) -> Any:
    """`value` as a client writes it in JSON (objects keyed by strings)."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {str(key): item for key, item in value.items()}
    if isinstance(value, StructuredOutputs):
        return value.engine_value()
    return value


def _vllm_value(value: Any) -> Any:
    """A vLLM parameter as `SamplingSpec.engine_fields` writes it (a dataclass as its
    public fields)."""
    if dataclasses.is_dataclass(value):
        fields = dataclasses.asdict(value)
        return {k: v for k, v in fields.items() if not k.startswith("_") and v is not None}
    return value


def _spec_with(name: str) -> SamplingSpec:
    value = _other_value(name)
    try:
        return SamplingSpec(**{name: value})
    except ValidationError as exc:  # a made-up value must still be a valid one
        raise AssertionError(f"{name}={value!r} is not valid: {exc}") from exc


@pytest.mark.parametrize("name", ENGINE_FIELDS)
def test_every_field_reaches_vllm_by_its_name_in_process(name):
    spec = _spec_with(name)
    params = sampling_params(spec, 0)
    expected = spec.engine_fields()[name]
    assert _vllm_value(getattr(params, name)) == expected
    assert expected != SamplingSpec.model_fields[name].default  # the value did change something


@pytest.mark.parametrize("name", ENGINE_FIELDS)
def test_a_remote_request_means_to_vllm_what_the_in_process_call_means(name):
    """vLLM's own request model reads the remote body into the same sampling parameters
    as the in-process adapter makes."""
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest as VLLMRequest

    spec = _spec_with(name)
    body = json.loads(json.dumps(_completion_body("m", [1, 2, 3], spec, 0)))  # as sent
    remote = VLLMRequest.model_validate(body).to_sampling_params(spec.max_tokens)
    local = sampling_params(spec, 0)
    assert getattr(remote, name) == getattr(local, name)


def test_fields_the_adapters_handle_themselves_are_handled_by_both():
    spec = SamplingSpec(seed=5, logprobs=4, confidence_stop=ConfidenceStop(window=8, threshold=1))
    adapted = {"seed", "keep_logprobs", "priority", "confidence_stop", "tool_calling"}
    adapted |= {"cache_salt", "session_id"}  # vLLM's prompt and request, not its sampling
    assert set(SamplingSpec.fields_exposed(ADAPTER)) == adapted
    salted = spec.replace(cache_salt="tenant-7", session_id="chat-1")
    assert "cache_salt" not in _completion_body("m", [1], spec, 0)
    assert _completion_body("m", [1], salted, 0)["cache_salt"] == "tenant-7"
    assert _completion_body("m", [1], salted, 0)["session_id"] == "chat-1"
    # tools are the adapters' to turn into a constraint and to read calls from
    tool = {"type": "function", "function": {"name": "f"}}
    calling = SamplingSpec(tool_calling=ToolCalling(tools=(tool,)))
    assert "tool_calling" not in _completion_body("m", [1], calling, 0)
    assert "priority" not in _completion_body("m", [1], spec, 0)  # 0: vLLM's default
    assert _completion_body("m", [1], spec.replace(priority=-2), 0)["priority"] == -2
    assert sampling_params(spec, 3).seed == 8 == _completion_body("m", [1], spec, 3)["seed"]
    # a watched sample streams every token so that the watch can stop it in time
    assert sampling_params(spec, 0).output_kind.name == "DELTA"
    assert "stream_interval" not in _completion_body("m", [1], spec, 0)
    plain = spec.replace(confidence_stop=None)
    assert sampling_params(plain, 0).output_kind.name == "FINAL_ONLY"


@pytest.mark.parametrize("model", [ChatCompletionRequest, CompletionRequest])
def test_the_api_requests_carry_exactly_the_fields_marked_for_the_api(model):
    for name in SamplingSpec.fields_exposed(API):
        assert name in model.model_fields
    unmarked = set(SamplingSpec.model_fields) - set(SamplingSpec.fields_exposed(API))
    # the API's own spellings: max_tokens (a server default when unset) and logprobs
    # (the log-probabilities a client sees, which set the spec's logprobs and keep_logprobs)
    assert not unmarked & set(model.model_fields) - {"max_tokens", "logprobs"}


@pytest.mark.parametrize("name", SamplingSpec.fields_exposed(API))
def test_an_api_field_set_by_the_client_reaches_the_sampling_spec(name):
    value = _other_value(name)
    request = CompletionRequest.model_validate(
        {"model": "m", "prompt": "hi", name: _as_json(value)}
    )
    spec = request.service_request("r").sampling
    assert getattr(spec, name) == value
    assert spec.model_fields_set == {name}  # unset fields stay the strategy's defaults
