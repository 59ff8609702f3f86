"""`POST /v1/chat/completions`: plain sampling, or a test-time-scaling strategy.

Without a strategy the request behaves like any OpenAI-compatible server (`n` choices).
With one (see `strategy_selection`), the strategy's pick is the single choice, `usage`
counts every token generated on the request's behalf, and the `ttscale` field carries
the evidence.
"""

from __future__ import annotations

import logging
import time

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
    PromptTokensDetails,
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


def max_tokens_for(
    body: ChatCompletionRequest, prompt_tokens: int, max_model_len: int, settings: Settings
) -> int:
    room = max_model_len - prompt_tokens
    if room < 1:
        raise APIError(
            400,
            f"the prompt is {prompt_tokens} tokens; this model's context is {max_model_len}",
            param="messages",
            code="context_length_exceeded",
        )
    requested = body.requested_max_tokens
    if requested is None:
        return min(settings.default_max_tokens, room)
    if requested > room:
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        raise APIError(
            400,
            f"{param}={requested} does not fit: the prompt is {prompt_tokens} tokens "
            f"and this model's context is {max_model_len}",
            param=param,
            code="context_length_exceeded",
        )
    return requested


async def complete_chat(
    settings: Settings,
    engine: Engine,
    verifiers: Verifiers | None,
    registry: dict[str, Strategy],
    metrics: Metrics,
    body: ChatCompletionRequest,
    request: Request,
):
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
        strategy = registry.get(options.strategy)
        if strategy is None:
            known = ", ".join(registry)
            raise APIError(
                400,
                f"unknown strategy {options.strategy!r}; known: {known}",
                param="ttscale.strategy",
                code="unknown_strategy",
            )
        if body.n != 1:
            raise APIError(400, "a strategy returns one choice: leave n at 1", param="n")
    messages = body.message_dicts()
    prompt_ids = await engine.render_chat(messages)
    max_tokens = max_tokens_for(body, len(prompt_ids), info.max_model_len, settings)
    started = time.perf_counter()
    request_id = request.state.request_id

    if strategy is None:
        response = await _plain(engine, body, prompt_ids, max_tokens, request_id)
        metrics.record("none", "ok", time.perf_counter() - started, _plain_usage(response))
        if body.stream:
            return sse(_plain_events(response, include_usage=_wants_usage(body)))
    else:
        params = build_params(strategy, options, body, max_tokens)
        limits = check_limits(params, options.budget, settings)
        if body.stream:
            writer = ChunkWriter(info.model_name)

            async def run(progress):
                context = make_context(engine, verifiers, limits, messages, prompt_ids, progress)
                return await strategy.run(context, params)

            def finish(result):
                _record(metrics, strategy.name, result, time.perf_counter() - started)
                usage = _usage(len(prompt_ids), result.usage) if _wants_usage(body) else None
                return evidence(result, params, limits, options.include_text), usage

            return sse(strategy_events(writer, run, finish, progress=options.progress))
        context = make_context(engine, verifiers, limits, messages, prompt_ids)
        try:
            result = await run_strategy(request, strategy, params, context)
        except ClientDisconnected as gone:
            logger.info("request=%s cancelled by the client; spent %s", request_id, gone.args[0])
            metrics.record(strategy.name, "cancelled", time.perf_counter() - started, gone.args[0])
            return JSONResponse({"error": "client closed request"}, status_code=_CLIENT_CLOSED)
        _record(metrics, strategy.name, result, time.perf_counter() - started)
        spent = result.usage
        response = ChatCompletionResponse(
            model=info.model_name,
            choices=[
                ChatChoice(
                    index=0,
                    message=AssistantMessage(content=result.text),
                    finish_reason="stop" if result.text else "length",
                )
            ],
            usage=Usage(**_usage(len(prompt_ids), spent)),
            ttscale=evidence(result, params, limits, options.include_text),
        )
    logger.info(
        "request=%s model=%s strategy=%s prompt_tokens=%d completion_tokens=%d latency_s=%.2f",
        request_id,
        info.model_name,
        strategy.name if strategy else "none",
        len(prompt_ids),
        response.usage.completion_tokens,
        time.perf_counter() - started,
    )
    return response


async def _plain(
    engine: Engine,
    body: ChatCompletionRequest,
    prompt_ids: list[int],
    max_tokens: int,
    request_id: str,
) -> ChatCompletionResponse:
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
    completion_tokens = result.generated_tokens
    return ChatCompletionResponse(
        model=engine.info.model_name,
        choices=[
            ChatChoice(
                index=s.index,
                message=AssistantMessage(content=s.text),
                finish_reason=s.finish_reason,
            )
            for s in result.samples
        ],
        usage=Usage(
            prompt_tokens=len(prompt_ids),
            completion_tokens=completion_tokens,
            total_tokens=len(prompt_ids) + completion_tokens,
            prompt_tokens_details=PromptTokensDetails(
                cached_tokens=min(s.cached_prompt_tokens for s in result.samples)
            ),
        ),
    )


def _usage(prompt_tokens: int, spent) -> dict:
    """OpenAI usage of a strategy run: completion tokens are every generated token."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": spent.generated_tokens,
        "total_tokens": prompt_tokens + spent.generated_tokens,
        "prompt_tokens_details": {"cached_tokens": spent.cached_prompt_tokens},
    }


def _wants_usage(body: ChatCompletionRequest) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


async def _plain_events(response: ChatCompletionResponse, *, include_usage: bool):
    """A plain (strategy-less) completion as a stream. The engine layer returns whole
    samples, so each choice arrives as one content chunk."""
    writer = ChunkWriter(response.model)
    for choice in response.choices:
        yield writer.chunk({"role": "assistant", "content": ""}, index=choice.index)
        yield writer.chunk({"content": choice.message.content}, index=choice.index)
        yield writer.chunk({}, index=choice.index, finish_reason=choice.finish_reason)
    if include_usage:
        yield writer.usage(response.usage.model_dump())
    yield writer.done()


def _record(metrics: Metrics, name: str, result, seconds: float) -> None:
    metrics.record(name, "ok", seconds, result.usage)
    if result.stop_reason == "budget":
        metrics.budget_stop(name)


def _plain_usage(response: ChatCompletionResponse) -> BudgetUsage:
    details = response.usage.prompt_tokens_details
    return BudgetUsage(
        prompt_tokens=response.usage.prompt_tokens,
        cached_prompt_tokens=details.cached_tokens if details else 0,
        generated_tokens=response.usage.completion_tokens,
    )
