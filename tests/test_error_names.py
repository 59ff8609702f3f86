"""The service names a field by its path in `ServiceRequest`; the HTTP layer reports the
same error under the request's own field names, in `param` and in the message."""

from __future__ import annotations

import pytest

from ttscale.server.api.errors import api_error
from ttscale.server.api.schemas import ChatCompletionRequest, api_field_name
from ttscale.strategies.errors import InvalidRequest, ModelNotFound, field_ref

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("service_path", "api_name"),
    [
        ("n", "n"),
        ("model", "model"),
        ("messages", "messages"),
        ("sampling.max_tokens", "max_tokens"),
        ("sampling.temperature", "temperature"),
        ("choice", "ttscale"),
        ("choice.strategy", "ttscale.strategy"),
        ("choice.params.sampling.max_tokens", "ttscale.params.sampling.max_tokens"),
        ("choice.budget.max_wall_s", "ttscale.budget.max_wall_s"),
    ],
)
def test_service_paths_are_the_api_fields_they_stand_for(service_path, api_name):
    assert api_field_name(service_path) == api_name


def test_an_error_names_the_length_field_the_client_used():
    error = InvalidRequest(
        f"{field_ref('n')} x {field_ref('sampling.max_tokens')} = 120 exceeds the limit",
        param="sampling.max_tokens",
    )
    assert error.message == "n x sampling.max_tokens = 120 exceeds the limit"
    plain = api_error(error, ChatCompletionRequest.model_validate(CHAT).field_name)
    assert (plain.status, plain.param) == (400, "max_tokens")
    assert plain.message == "n x max_tokens = 120 exceeds the limit"
    body = ChatCompletionRequest.model_validate({**CHAT, "max_completion_tokens": 40})
    newer = api_error(error, body.field_name)
    assert newer.param == "max_completion_tokens"
    assert newer.message == "n x max_completion_tokens = 120 exceeds the limit"


def test_a_model_the_server_does_not_serve_is_a_404():
    error = api_error(ModelNotFound("model 'x' is not served here", param="model"))
    assert (error.status, error.param, error.message) == (
        404,
        "model",
        "model 'x' is not served here",
    )


@pytest.mark.parametrize(
    ("service_path", "bench_name"),
    [
        ("choice.params.n", "n"),
        ("choice.params.sampling.max_tokens", "sampling.max_tokens"),
        ("choice.budget.max_wall_s", "budget.max_wall_s"),
        ("sampling.max_tokens", "--max-tokens"),
        ("messages", "messages"),
    ],
)
def test_the_benchmark_names_fields_as_its_settings_write_them(service_path, bench_name):
    from ttscale.benchmarks.backends import setting_field_name

    assert setting_field_name(service_path) == bench_name
