"""Chat and text completions: plain sampling, or a test-time-scaling strategy.

Without a strategy a request behaves like any OpenAI-compatible server (`n` choices).
With one (see `strategy_selection`), the strategy's pick is the single choice, `usage`
counts every token generated on the request's behalf, and the `ttscale` field carries
the evidence. Chat and text completions differ only in how the prompt is built and how
choices are written; everything between is shared here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse

from strategies.base import Verifiers
from strategies.budget import Usage as BudgetUsage
from strategies.registry import Strategy

from ..config import Settings
from ..engine.protocol import Engine
from ..engine.types import SamplingSpec
from ..metrics import Metrics
from .errors import APIError
from .schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    SamplingRequest,
    TextChoice,
    Usage,
)
from .strategy_call import (
    ClientDisconnected,
    build_params,
    check_limits,
    evidence,
    make_context,
    resolve_options,
    run_strategy,
)
from .streaming import ChunkWriter, sse, strategy_events

logger = logging.getLogger("ttscale.server")
_CLIENT_CLOSED = 499
Kind = Literal["chat", "text"]


@dataclass(frozen=True)
class Services:
    """What a completion needs from the server (no globals: one per app)."""

    settings: Settings
    engine: Engine
    verifiers: Verifiers | None
    strategies: dict[str, Strategy]
    metrics: Metrics


@dataclass(frozen=True)
class Choice:
    index: int
    text: str
    finish_reason: str


def max_tokens_for(
    body: SamplingRequest, prompt_tokens: int, max_model_len: int, settings: Settings
) -> int:
    room = max_model_len - prompt_tokens
    param = "messages" if isinstance(body, ChatCompletionRequest) else "prompt"
    if room < 1:
        raise APIError(
            400,
            f"the prompt is {prompt_tokens} tokens; this model's context is {max_model_len}",
            param=param,
            code="context_length_exceeded",
        )
    requested = body.requested_max_tokens
    if requested is None:
        return min(settings.default_max_tokens, room)
    if requested > room:
        raise APIError(
            400,
            f"{body.max_tokens_param}={requested} does not fit: the prompt is {prompt_tokens} "
            f"tokens and this model's context is {max_model_len}",
            param=body.max_tokens_param,
            code="context_length_exceeded",
        )
    return requested


async def _prompt(engine: Engine, body: SamplingRequest) -> tuple[list[dict[str, str]], list[int]]:
    """Messages (what strategies re-render, e.g. for refinement) and prompt token ids."""
    if isinstance(body, ChatCompletionRequest):
        messages = body.message_dicts()
        return messages, await engine.render_chat(messages)
    assert isinstance(body, CompletionRequest)
    if isinstance(body.prompt, str):
        return [{"role": "user", "content": body.prompt}], await engine.tokenize(body.prompt)
    if any(t < 0 for t in body.prompt):
        raise APIError(400, "prompt token ids must be non-negative", param="prompt")
    text = await engine.detokenize(body.prompt)
    return [{"role": "user", "content": text}], list(body.prompt)


async def complete(services: Services, body: SamplingRequest, request: Request, kind: Kind):
    settings, engine = services.settings, services.engine
    info = engine.info
    model, options = resolve_options(body)
    if model != info.model_name:
        raise APIError(
            404,
            f"model {model!r} is not served here; this server serves {info.model_name!r}",
            param="model",
            code="model_not_found",
        )
    if body.n > settings.max_n:
        raise APIError(400, f"n must be at most {settings.max_n}", param="n")
    strategy = None
    if options is not None and options.strategy is not None:
        strategy = services.strategies.get(options.strategy)
        if strategy is None:
            known = ", ".join(services.strategies)
            raise APIError(
                400,
                f"unknown strategy {options.strategy!r}; known: {known}",
                param="ttscale.strategy",
                code="unknown_strategy",
            )
        if body.n != 1:
            raise APIError(400, "a strategy returns one choice: leave n at 1", param="n")
    messages, prompt_ids = await _prompt(engine, body)
    max_tokens = max_tokens_for(body, len(prompt_ids), info.max_model_len, settings)
    started = time.perf_counter()
    request_id = request.state.request_id
    writer = ChunkWriter(info.model_name, kind)

    if strategy is None:
        choices, usage = await _plain(engine, body, prompt_ids, max_tokens, request_id)
        services.metrics.record("none", "ok", time.perf_counter() - started, usage)
        if body.stream:
            return sse(_plain_events(writer, choices, _usage(len(prompt_ids), usage), body))
        response = _response(kind, info.model_name, choices, _usage(len(prompt_ids), usage))
        _log(request_id, info.model_name, "none", len(prompt_ids), usage, started)
        return response

    params = build_params(strategy, options, body, max_tokens)
    limits = check_limits(params, options.budget, settings)
    if body.stream:
        contexts = []

        async def run(progress):
            context = make_context(
                engine, services.verifiers, limits, messages, prompt_ids, progress
            )
            contexts.append(context)
            return await strategy.run(context, params)

        def cancelled() -> None:
            spent = contexts[0].budget.finish() if contexts else None
            logger.info("request=%s stream closed by the client; spent %s", request_id, spent)
            services.metrics.record(
                strategy.name, "cancelled", time.perf_counter() - started, spent
            )

        def finish(result):
            _record(services.metrics, strategy.name, result, time.perf_counter() - started)
            usage = _usage(len(prompt_ids), result.usage) if _wants_usage(body) else None
            return evidence(result, params, limits, options.include_text), usage

        return sse(
            strategy_events(writer, run, finish, progress=options.progress, on_cancel=cancelled)
        )

    context = make_context(engine, services.verifiers, limits, messages, prompt_ids)
    try:
        result = await run_strategy(request, strategy, params, context)
    except ClientDisconnected as gone:
        spent = gone.args[0]
        logger.info("request=%s cancelled by the client; spent %s", request_id, spent)
        services.metrics.record(strategy.name, "cancelled", time.perf_counter() - started, spent)
        return JSONResponse({"error": "client closed request"}, status_code=_CLIENT_CLOSED)
    _record(services.metrics, strategy.name, result, time.perf_counter() - started)
    choice = Choice(0, result.text, "stop" if result.text else "length")
    response = _response(kind, info.model_name, [choice], _usage(len(prompt_ids), result.usage))
    response.ttscale = evidence(result, params, limits, options.include_text)
    _log(request_id, info.model_name, strategy.name, len(prompt_ids), result.usage, started)
    return response


def _response(kind: Kind, model: str, choices: list[Choice], usage: dict[str, Any]):
    if kind == "chat":
        return ChatCompletionResponse(
            model=model,
            choices=[
                ChatChoice(
                    index=c.index,
                    message=AssistantMessage(content=c.text),
                    finish_reason=c.finish_reason,
                )
                for c in choices
            ],
            usage=Usage(**usage),
        )
    return CompletionResponse(
        model=model,
        choices=[
            TextChoice(index=c.index, text=c.text, finish_reason=c.finish_reason) for c in choices
        ],
        usage=Usage(**usage),
    )


async def _plain(
    engine: Engine, body: SamplingRequest, prompt_ids: list[int], max_tokens: int, request_id: str
) -> tuple[list[Choice], BudgetUsage]:
    spec = SamplingSpec(
        n=body.n,
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=max_tokens,
        stop=tuple(body.stop or ()),
        seed=body.seed,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
    )
    result = await engine.generate(prompt_ids, spec, request_id=request_id)
    usage = BudgetUsage(
        prompt_tokens=result.prompt_tokens,
        cached_prompt_tokens=min(s.cached_prompt_tokens for s in result.samples),
        generated_tokens=result.generated_tokens,
    )
    return [Choice(s.index, s.text, s.finish_reason) for s in result.samples], usage


def _usage(prompt_tokens: int, spent: BudgetUsage) -> dict[str, Any]:
    """OpenAI usage: completion tokens are every token generated for the request."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": spent.generated_tokens,
        "total_tokens": prompt_tokens + spent.generated_tokens,
        "prompt_tokens_details": {"cached_tokens": spent.cached_prompt_tokens},
    }


def _wants_usage(body: SamplingRequest) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


async def _plain_events(
    writer: ChunkWriter, choices: list[Choice], usage: dict[str, Any], body: SamplingRequest
):
    """A plain (strategy-less) completion as a stream. The engine layer returns whole
    samples, so each choice arrives as one content chunk."""
    for choice in choices:
        yield writer.chunk({"role": "assistant", "content": ""}, index=choice.index)
        yield writer.chunk({"content": choice.text}, index=choice.index)
        yield writer.chunk({}, index=choice.index, finish_reason=choice.finish_reason)
    if _wants_usage(body):
        yield writer.usage(usage)
    yield writer.done()


def _record(metrics: Metrics, name: str, result, seconds: float) -> None:
    metrics.record(name, "ok", seconds, result.usage)
    if result.stop_reason == "budget":
        metrics.budget_stop(name)


def _log(request_id, model, strategy, prompt_tokens, usage, started) -> None:
    logger.info(
        "request=%s model=%s strategy=%s prompt_tokens=%d completion_tokens=%d "
        "verifier_tokens=%d latency_s=%.2f",
        request_id,
        model,
        strategy,
        prompt_tokens,
        usage.generated_tokens,
        usage.verifier_tokens,
        time.perf_counter() - started,
    )
