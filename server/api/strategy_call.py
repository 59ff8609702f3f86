"""Turning a chat request with a strategy into a strategy run, and its result into the
`ttscale` evidence of the response.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError

from strategies.base import ProgressCallback, StrategyContext, StrategyResult, Verifiers
from strategies.budget import Budget, BudgetLimits
from strategies.registry import Strategy

from ..config import Settings
from ..engine.protocol import Engine
from ..validation import first_problem
from .errors import APIError
from .schemas import ChatCompletionRequest
from .strategy_selection import TTScaleOptions, split_model_name

_SAMPLING_FIELDS = {"temperature": "temperature", "top_p": "top_p", "seed": "seed"}


class ClientDisconnected(Exception):
    """The client went away; the strategy run was cancelled and its samples aborted."""


def resolve_options(body: ChatCompletionRequest) -> tuple[str, TTScaleOptions | None]:
    """The served model name the request meant and its strategy options, from either
    the `ttscale` body field or the model-name suffix (not both)."""
    base, from_suffix = split_model_name(body.model)
    if from_suffix is not None and body.ttscale is not None:
        raise APIError(
            400,
            "choose the strategy either in the model name or in ttscale, not both",
            param="model",
        )
    return base, from_suffix or body.ttscale


def build_params(
    strategy: Strategy, options: TTScaleOptions, body: ChatCompletionRequest, max_tokens: int
) -> BaseModel:
    """Strategy parameters: the request's own sampling fields are the defaults of the
    strategy's `sampling` block; what `ttscale.params` says wins."""
    raw = dict(options.params)
    if "sampling" in strategy.params_model.model_fields:
        sampling = {"max_tokens": max_tokens}
        for field, key in _SAMPLING_FIELDS.items():
            if field in body.model_fields_set:
                sampling[key] = getattr(body, field)
        given = raw.get("sampling") or {}
        if not isinstance(given, dict):
            raise APIError(
                400, "ttscale.params.sampling must be an object", param="ttscale.params.sampling"
            )
        raw["sampling"] = {**sampling, **given}
    try:
        return strategy.parse_params(raw)
    except ValidationError as exc:
        where, message, kind = first_problem(exc)
        param = f"ttscale.params.{where}" if where else "ttscale.params"
        message = "unknown parameter" if kind == "extra_forbidden" else message
        raise APIError(400, f"{param}: {message}", param=param) from exc


def check_limits(params: BaseModel, limits: BudgetLimits, settings: Settings) -> BudgetLimits:
    """Apply the server's limits: refuse what exceeds them, cap what is unset."""
    n = getattr(params, "n", None)
    if n is not None and n > settings.max_n:
        raise APIError(
            400, f"n={n} exceeds this server's limit of {settings.max_n}", param="ttscale.params.n"
        )
    cap = settings.max_request_tokens
    asked = limits.max_generated_tokens
    if asked is not None and asked > cap:
        raise APIError(
            400,
            f"max_generated_tokens={asked} exceeds this server's limit of {cap}",
            param="ttscale.budget.max_generated_tokens",
        )
    if asked is not None and asked < settings.min_sample_tokens:
        raise APIError(
            400,
            f"a budget of {asked} generated tokens cannot pay for one sample "
            f"(at least {settings.min_sample_tokens} tokens)",
            param="ttscale.budget.max_generated_tokens",
        )
    if asked is None:
        limits = limits.model_copy(update={"max_generated_tokens": cap})
    return limits


def make_context(
    engine: Engine,
    verifiers: Verifiers,
    limits: BudgetLimits,
    messages: list[dict[str, str]],
    prompt_ids: list[int],
    progress: ProgressCallback | None = None,
) -> StrategyContext:
    """A fresh context, with its own budget, for one request."""
    return StrategyContext(
        engine=engine,
        verifiers=verifiers,
        budget=Budget(limits, policy_shape=engine.info.shape),
        messages=messages,
        prompt_ids=prompt_ids,
        question=messages[-1]["content"] if messages else "",
        progress=progress,
    )


async def run_strategy(
    request: Request, strategy: Strategy, params: BaseModel, context: StrategyContext
) -> StrategyResult:
    """Run the strategy; cancel it (aborting its samples) if the client disconnects."""
    budget = context.budget
    task = asyncio.create_task(strategy.run(context, params))
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.25)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            budget.finish()
            raise ClientDisconnected(budget.usage)


def evidence(
    result: StrategyResult, params: BaseModel, limits: BudgetLimits, include_text: bool
) -> dict[str, Any]:
    """The `ttscale` field of a response: what was run, what it found, what it spent."""
    data = result.model_dump(exclude={"usage"})
    if not include_text:
        for candidate in data["candidates"]:
            candidate.pop("text", None)
    data["params"] = params.model_dump()
    data["budget"] = {
        "granted": limits.model_dump(),
        "spent": {
            **result.usage.model_dump(),
            "verifier_tokens": result.usage.verifier_tokens,
            "total_flops": result.usage.total_flops,
        },
    }
    return data
