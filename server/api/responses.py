"""Pydantic models of the API's responses, and the error responses every route may give."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field

from ttscale.engine.types import ToolCall
from ttscale.strategies.budget import Spending
from ttscale.strategies.service import Choice

from .logprobs import ChatLogprobs, CompletionLogprobs
from .shown import PLAIN, PromptLogprobs, Shown


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class Usage(BaseModel):
    """OpenAI usage, counted as the budget counts: a strategy's `prompt_tokens` are the
    prompt tokens of every engine request made for it (a sample of N reads its prompt N
    times; a plain request counts its prompt once, as vLLM's server does),
    `cached_tokens` the part of those served from the prefix cache (never more than
    `prompt_tokens`), `completion_tokens` every token generated, aborted samples'
    included. Verifier tokens are reported in the `ttscale` evidence."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = Field(
        None, description="with a reasoning parser: the thinking tokens among them"
    )

    @classmethod
    def of(cls, spent: Spending, *, reasoning: bool = False) -> Usage:
        """The usage of what was spent; `reasoning` (a server with a reasoning parser)
        adds the thinking tokens, as vLLM's server does."""
        details = CompletionTokensDetails(reasoning_tokens=spent.reasoning_tokens)
        return cls(
            prompt_tokens=spent.prompt_tokens,
            completion_tokens=spent.generated_tokens,
            total_tokens=spent.prompt_tokens + spent.generated_tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=spent.cached_prompt_tokens),
            completion_tokens_details=details if reasoning else None,
        )


class CalledFunction(BaseModel):
    name: str
    arguments: str = Field(description="the arguments as JSON text")


class ResponseToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: CalledFunction

    @classmethod
    def of(cls, call: ToolCall) -> ResponseToolCall:
        return cls(id=call.id, function=CalledFunction(name=call.name, arguments=call.arguments))


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = Field(
        description="the answer; null for a reasoning model's sample without an answer "
        "part, and for a reply that is only tool calls"
    )
    reasoning: str | None = Field(
        None, description="a reasoning model's thinking (vLLM's name for it)"
    )
    reasoning_content: str | None = Field(
        None, description="the same thinking, under the name older clients read"
    )
    tool_calls: list[ResponseToolCall] | None = Field(
        None, description="the calls the model made, when the request let it call tools"
    )

    @classmethod
    def of(cls, choice: Choice, shown: Shown = PLAIN) -> AssistantMessage:
        """A choice as vLLM's server writes it: the answer part as the content (null
        when a reasoning model's sample has none, or the reply is only tool calls that
        the model chose to make; empty when it had to), the thinking and the calls apart."""
        content = choice.text if choice.content is None else (choice.content or None)
        if content is None and shown.forced_call:
            content = ""
        reasoning = choice.reasoning if shown.thinking.shown else None
        calls = shown.tool_calls_of(choice)
        return cls(
            content=shown.content_of(content),
            reasoning=reasoning,
            reasoning_content=reasoning,
            tool_calls=None if calls is None else [ResponseToolCall.of(c) for c in calls],
        )


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length", "abort", "repetition", "tool_calls"]
    logprobs: ChatLogprobs | None = None
    token_ids: list[int] | None = None


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=_completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage
    prompt_logprobs: PromptLogprobs | None = None
    prompt_token_ids: list[int] | None = None
    prompt_text: str | None = Field(
        None, description="with return_prompt_text: the prompt the chat template wrote"
    )
    ttscale: dict[str, Any] | None = Field(
        None, description="strategy evidence: candidates, votes, stop reason, budget"
    )


class TextChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length", "abort", "repetition"]
    logprobs: CompletionLogprobs | None = None
    prompt_logprobs: PromptLogprobs | None = None
    prompt_token_ids: list[int] | None = None
    token_ids: list[int] | None = None


class CompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[TextChoice]
    usage: Usage
    ttscale: dict[str, Any] | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "ttscale"
    max_model_len: int
    strategies: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="strategy name -> JSON Schema of its parameters"
    )


class StrategyCard(BaseModel):
    name: str
    description: str | None
    parameters: dict[str, Any]


class StrategyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[StrategyCard]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class VerifierCard(BaseModel):
    name: str
    kinds: list[Literal["outcome", "process"]] = Field(
        description="outcome: scores whole solutions; process: scores each step"
    )
    model: str | None = None
    backend: str | None = None
    format: str | None = Field(None, description="a PRM's input format: qwen or math-shepherd")


class VerifierList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VerifierCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """Every error response: the OpenAI error object."""

    error: ErrorDetail


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


API_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("invalid request: the message names the field (`param`)"),
    401: _error("missing or wrong API key (when keys are configured)"),
    404: _error("the model is not served here"),
    413: _error("the request body is over the size limit"),
    429: _error("too many completion requests in flight; see Retry-After"),
    500: _error("an unexpected server error (the message names the request id)"),
    503: _error("the engine is loading, failed, or a model server is unavailable"),
}
"""Error responses every /v1 route may give, for the OpenAPI description."""

COMPLETION_ERRORS: dict[int | str, dict[str, Any]] = {
    **API_ERRORS,
    499: {"description": "the client closed the connection; the work was cancelled"},
}
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "string",
            "description": "an OpenAI chunk or error object as JSON, or [DONE] at the end",
        },
        "event": {"type": "string"},
    },
}
STREAM_CONTENT = {
    "text/event-stream": {
        # `itemSchema` (OpenAPI 3.2) describes each event; tools that read this 3.1
        # description without it see an undescribed stream rather than a wrong one.
        "itemSchema": SSE_EVENT,
        "example": 'data: {"object": "chat.completion.chunk", ...}\n\ndata: [DONE]\n\n',
    }
}
"""With `"stream": true` the 200 is a server-sent event stream of OpenAI chunks."""
