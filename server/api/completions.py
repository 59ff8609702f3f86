"""Chat and text completions over HTTP: parse, call the service entry, format.

Without a strategy a request behaves like any OpenAI-compatible server (`n` choices).
With one (the `ttscale` field or a model-name suffix), the strategy's pick is the single
choice, `usage` counts every token spent on the request's behalf, and the `ttscale`
field carries the evidence. Everything between parsing and formatting is
`ttscale.strategies.service.Service`; chat and text differ only in their response shapes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Literal

from fastapi import Request
from fastapi.responses import StreamingResponse

from ttscale.strategies.base import ProgressCallback
from ttscale.strategies.budget import Spending
from ttscale.strategies.errors import RequestError
from ttscale.strategies.service import PreparedRequest, Service, ServiceResult

from ..metrics import Metrics
from .disconnect import ClientDisconnected, unless_disconnected
from .errors import api_error, error_response
from .logprobs import logprobs_of
from .responses import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionResponse,
    CompletionResponse,
    TextChoice,
    Usage,
)
from .schemas import SamplingRequest
from .shown import PLAIN, Shown
from .streaming import ChunkWriter, completion_events, sse

logger = logging.getLogger("ttscale.server")
_CLIENT_CLOSED = 499
Kind = Literal["chat", "text"]


@dataclass(frozen=True)
class Completions:
    """The completion endpoints' shared dependencies (one per app, no globals)."""

    service: Service
    metrics: Metrics

    async def handle(self, body: SamplingRequest, request: Request, kind: Kind):
        started = time.perf_counter()
        try:
            prepared = await self.service.prepare(body.service_request(request.state.request_id))
        except RequestError as exc:
            raise api_error(exc, body.field_name) from exc
        if body.stream:
            return self._stream(body, prepared, kind, started, await self._shown(body, prepared))
        try:
            result = await unless_disconnected(request, self.service.execute(prepared))
        except ClientDisconnected:
            self._cancelled(prepared, started)
            return error_response(
                _CLIENT_CLOSED, "the client closed the request", code="client_closed"
            )
        except Exception:
            self._failed(prepared, started)
            raise
        self._finished(prepared, result, started)
        return format_response(kind, result, await self._shown(body, prepared))

    def _stream(
        self,
        body: SamplingRequest,
        prepared: PreparedRequest,
        kind: Kind,
        started: float,
        shown: Shown,
    ) -> StreamingResponse:
        async def execute(progress: ProgressCallback) -> ServiceResult:
            try:
                result = await self.service.execute(prepared, progress)
            except Exception:
                self._failed(prepared, started)
                raise
            self._finished(prepared, result, started)
            return result

        choice = prepared.request.choice
        events = completion_events(
            ChunkWriter(self.service.engine.info.model_name, kind, shown),
            execute,
            progress=choice.progress if choice is not None else False,
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
            on_cancel=lambda: self._cancelled(prepared, started),
        )
        return sse(events)

    async def _shown(self, body: SamplingRequest, prepared: PreparedRequest) -> Shown:
        prompt_text = (prepared.messages[-1]["content"] or "") if prepared.messages else ""
        parser = self.service.engine.info.reasoning_parser
        shown = body.shown(parser, prompt_text, prepared.prompt_ids)
        if not body.returns_prompt_text:
            return shown
        rendered = await self.service.engine.detokenize(prepared.prompt_ids)
        return replace(shown, rendered_prompt=rendered)

    def _finished(self, prepared: PreparedRequest, result: ServiceResult, started: float) -> None:
        seconds = time.perf_counter() - started
        self.metrics.record(result.strategy, "ok", seconds, result.usage)
        self.metrics.grading(prepared.grading)
        if result.stop_reason == "budget":
            self.metrics.budget_stop(result.strategy)
        _log(prepared, result.usage, seconds)

    def _failed(self, prepared: PreparedRequest, started: float) -> None:
        seconds = time.perf_counter() - started
        self.metrics.record(prepared.strategy_name, "error", seconds, prepared.spent())
        self.metrics.grading(prepared.grading)

    def _cancelled(self, prepared: PreparedRequest, started: float) -> None:
        spent = prepared.spent()
        logger.info(
            "request=%s cancelled by the client; spent %s", prepared.request.request_id, spent
        )
        self.metrics.record(
            prepared.strategy_name, "cancelled", time.perf_counter() - started, spent
        )
        self.metrics.grading(prepared.grading)


def format_response(kind: Kind, result: ServiceResult, shown: Shown = PLAIN):
    """The JSON body. A chat message carries a reasoning model's answer part as its content
    and its thinking apart; a text completion carries the whole text, as vLLM's do; each
    choice shows what `shown` says the client asked for (log-probabilities, the prompt)."""
    usage = Usage.of(result.usage, reasoning=shown.thinking.counted)
    if kind == "chat":
        choices = [
            ChatChoice(
                index=c.index,
                message=AssistantMessage.of(c, shown),
                finish_reason=shown.finish_reason_of(c),
                logprobs=logprobs_of(kind, c.logprobs, shown.logprobs),
                token_ids=shown.token_ids_of(c),
            )
            for c in result.choices
        ]
        scored = shown.scored_prompt(result.choices[0]) if result.choices else None
        return ChatCompletionResponse(
            id=shown.response_id(kind),
            model=result.model,
            choices=choices,
            usage=usage,
            prompt_logprobs=scored,
            prompt_token_ids=shown.prompt_token_ids,
            prompt_text=shown.rendered_prompt,
            ttscale=result.evidence,
        )
    choices = [
        TextChoice(
            index=c.index,
            text=shown.text_of(c),
            finish_reason=c.finish_reason,
            logprobs=logprobs_of(kind, shown.positions_of(c), shown.logprobs),
            prompt_logprobs=shown.scored_prompt(c),
            prompt_token_ids=shown.prompt_token_ids,
            token_ids=shown.token_ids_of(c),
        )
        for c in result.choices
    ]
    return CompletionResponse(
        id=shown.response_id(kind),
        model=result.model,
        choices=choices,
        usage=usage,
        ttscale=result.evidence,
    )


def _log(prepared: PreparedRequest, usage: Spending, seconds: float) -> None:
    logger.info(
        "request=%s strategy=%s prompt_tokens=%d completion_tokens=%d "
        "verifier_tokens=%d latency_s=%.2f",
        prepared.request.request_id,
        prepared.strategy_name,
        usage.prompt_tokens,
        usage.generated_tokens,
        usage.verifier_tokens,
        seconds,
    )
