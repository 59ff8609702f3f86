"""The service entry: one request in, one result out, below HTTP.

`Service.prepare` validates a parsed request once (model, `n`, strategy and typed
parameters, budget against the service's limits, prompt against the context) and
renders its prompt; `Service.execute` opens the request's budget, runs the strategy (or
plain sampling) and returns the choices, spending and evidence. Errors the caller can
fix are `RequestError`s naming fields by their paths in `ServiceRequest` (`errors.py`).
The HTTP server and `ttscale bench` both call this, so a strategy behaves the same from
either.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ttscale.engine.lifecycle import close_together
from ttscale.engine.protocol import Engine, EngineRejected
from ttscale.engine.types import (
    DEFAULT_RENDERING,
    FinishReason,
    Position,
    PromptRendering,
    Sample,
    SamplingSpec,
    ToolCall,
)
from ttscale.verifiers.request_grading import GradingTally
from ttscale.verifiers.structured import AnswerFormat

from .base import Candidate, ProgressCallback, StrategyContext, StrategyResult, Verifiers
from .budget import Budget, BudgetLimits, Spending
from .errors import InvalidRequest, ModelNotFound, field_ref, first_problem
from .in_flight import DEFAULT_ENGINE_FILL, EngineLoad
from .params import StrategyParams
from .registry import Strategy
from .strategy_choice import StrategyChoice


class ServiceLimits(BaseModel):
    """What one request may ask of this service (from the server's settings)."""

    model_config = ConfigDict(frozen=True)

    max_n: int = Field(64, ge=1)
    max_request_tokens: int = Field(65536, ge=1)
    min_sample_tokens: int = Field(16, ge=1)
    default_max_tokens: int = Field(512, ge=1)
    min_wall_s: float = Field(0.05, ge=0.0, description="a wall-time budget below this is refused")
    grading_deadline_s: float = Field(
        15.0, gt=0.0, description="total wall time one request may spend grouping answers"
    )
    engine_fill: int = Field(
        DEFAULT_ENGINE_FILL,
        ge=1,
        description="samples in flight at which the engine counts as busy (see `load`)",
    )


class ServiceRequest(BaseModel):
    """A parsed request: a chat (`messages`) or a raw prompt (`prompt`), how to sample,
    and optionally a strategy. `sampling.model_fields_set` says which sampling fields
    the client chose; the others stay the strategy's defaults."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    model: str
    messages: list[dict[str, Any]] | None = None
    prompt: str | list[int] | None = None
    sampling: SamplingSpec = SamplingSpec()
    n: int = Field(1, ge=1)
    choice: StrategyChoice | None = None
    rendering: PromptRendering = DEFAULT_RENDERING
    """How `messages` become the prompt (and whether a text prompt gets the tokenizer's
    special tokens: `add_special_tokens`)."""


@dataclass(frozen=True)
class Choice:
    index: int
    text: str
    """The whole generated text (a reasoning model's thinking included)."""
    finish_reason: FinishReason
    content: str | None = None
    """A reasoning model's answer part (None: the text is the answer)."""
    reasoning: str | None = None
    """A reasoning model's thinking."""
    logprobs: list[Position] | None = None
    """Each generated position's log-probabilities, when the client asked for them."""
    prompt_logprobs: list[Position] | None = None
    """Each prompt position's (plain requests), when the client asked for them."""
    token_ids: list[int] | None = None
    tool_calls: list[ToolCall] | None = None
    """The calls read from the text, when the request gave tools to call (then `content`
    is what precedes them)."""

    @classmethod
    def of(cls, sample: Sample) -> Choice:
        """A plain request's sample as its choice."""
        return cls(
            index=sample.index,
            text=sample.text,
            finish_reason=sample.finish_reason,
            content=sample.content,
            reasoning=sample.reasoning,
            logprobs=sample.position_logprobs,
            prompt_logprobs=sample.prompt_logprobs,
            token_ids=sample.token_ids,
            tool_calls=sample.tool_calls,
        )

    @property
    def answer_text(self) -> str:
        """What a chat message's content is: the answer part, or the whole text."""
        return self.text if self.content is None else self.content


@dataclass(frozen=True)
class ServiceResult:
    model: str
    strategy: str
    """The strategy's name, "none" for plain sampling."""
    choices: list[Choice]
    usage: Spending
    evidence: dict[str, Any] | None = None
    stop_reason: str | None = None


@dataclass
class PreparedRequest:
    """A validated request, ready to run; its budget is open from here on."""

    request: ServiceRequest
    messages: list[dict[str, Any]]
    prompt_ids: list[int]
    sampling: SamplingSpec
    budget: Budget
    verifiers: Verifiers
    """The service's verifiers with this request's grading deadline and tally."""
    strategy: Strategy[Any] | None = None
    params: StrategyParams | None = None

    @property
    def strategy_name(self) -> str:
        return self.strategy.name if self.strategy is not None else "none"

    @property
    def grading(self) -> GradingTally | None:
        """What grading this request's answers has cost so far."""
        return self.verifiers.grader.tally

    def spent(self) -> Spending:
        """What the request has spent so far (after a cancellation, too)."""
        return self.budget.finish()


class Service:
    """One per process: the engine, verifiers and strategies every request shares, and
    the count of samples in flight that load-following requests read (`EngineLoad`)."""

    def __init__(
        self,
        engine: Engine,
        verifiers: Verifiers,
        strategies: dict[str, Strategy[Any]],
        limits: ServiceLimits | None = None,
    ) -> None:
        self.engine = engine
        self.verifiers = verifiers
        self.strategies = strategies
        self.limits = limits or ServiceLimits()
        self.load = EngineLoad(fill=self.limits.engine_fill)

    async def close(self) -> None:
        """Stop the verifiers and the engine together (`close_together`)."""
        await close_together(self.verifiers.close(), self.engine.close())

    async def complete(
        self, request: ServiceRequest, progress: ProgressCallback | None = None
    ) -> ServiceResult:
        return await self.execute(await self.prepare(request), progress)

    async def prepare(self, request: ServiceRequest) -> PreparedRequest:
        """Every check of the request, in one place, before any generation."""
        self._check_model(request.model)
        strategy = self._strategy(request)
        messages, prompt_ids = await self._prompt(request)
        prompt_ids = self._truncated(prompt_ids, request.rendering)
        sampling = request.sampling.replace(max_tokens=self._max_tokens(request, len(prompt_ids)))
        verifiers = self.verifiers.for_request(self.limits.grading_deadline_s)
        if strategy is None:
            self._check_thinking(sampling, "sampling")
            self._check_tool_calling(sampling)
            await self._check_engine(sampling, "sampling")
            budget = Budget(
                self._plain_limits(request, sampling), policy_shape=self.engine.info.shape
            )
            return PreparedRequest(request, messages, prompt_ids, sampling, budget, verifiers)
        choice = request.choice
        params = self._params(strategy, choice, request.sampling, sampling.max_tokens)
        self._check_lengths(params, len(prompt_ids))
        self._check_thinking(params.sampling, "choice.params.sampling")
        self._check_tool_calling(params.sampling)
        if params.sampling.tool_calling is not None and not params.draws_whole_samples():
            raise InvalidRequest(
                f"{field_ref('choice.strategy')} {strategy.name!r} draws its solutions step "
                "by step, and tool calls are read from whole samples: leave tool_choice at "
                '"none"',
                param="tool_choice",
            )
        if params.needs_thought_closes() and not self.engine.info.thought_closes:
            raise InvalidRequest(
                f"{field_ref('choice.strategy')} {strategy.name!r} needs a reasoning model "
                "whose parser marks thoughts with a token (ttscale serve --reasoning-parser)",
                param="choice.strategy",
            )
        for use in params.verifiers_used():
            self.verifiers.check(use, "choice.params")
        await self._check_engine(params.sampling, "choice.params.sampling")
        limits = self._budget_limits(params, choice.budget)
        budget = Budget(limits, policy_shape=self.engine.info.shape)
        return PreparedRequest(
            request, messages, prompt_ids, sampling, budget, verifiers, strategy, params
        )

    async def execute(
        self, prepared: PreparedRequest, progress: ProgressCallback | None = None
    ) -> ServiceResult:
        """Generate. Cancelling this coroutine aborts every sample it started."""
        context = StrategyContext(
            engine=self.engine,
            verifiers=prepared.verifiers,
            budget=prepared.budget,
            messages=prepared.messages,
            prompt_ids=prepared.prompt_ids,
            question=(prepared.messages[-1]["content"] or "") if prepared.messages else "",
            # unique per run: a client's id may repeat (retries), and vLLM aborts by id
            request_id=f"{prepared.request.request_id}-{uuid.uuid4().hex[:8]}",
            progress=progress,
            load=self.load,
            thinking_decay=prepared.params.thinking_decay if prepared.params else 1.0,
            answer_format=prepared.params.answer if prepared.params else AnswerFormat(),
        )
        model = self.engine.info.model_name
        if prepared.strategy is None:
            outcome = await context.sample(prepared.sampling, prepared.request.n)
            samples = outcome.finished + outcome.aborted
            choices = [Choice.of(s) for s in samples]
            return ServiceResult(model, "none", choices, _prompt_read_once(prepared, samples))
        result = await prepared.strategy.execute(context, prepared.params)
        chosen = _chosen(result)
        choice = Choice(
            index=0,
            text=result.text,
            finish_reason=_finish_reason(result, chosen),
            content=result.content,
            reasoning=result.reasoning,
            logprobs=chosen.logprobs if chosen is not None else None,
            token_ids=chosen.token_ids if chosen is not None else None,
            tool_calls=chosen.tool_calls if chosen is not None else None,
        )
        include_text = prepared.request.choice.include_text
        evidence = _evidence(result, prepared.params, prepared.budget.limits, include_text)
        return ServiceResult(
            model, result.strategy, [choice], result.usage, evidence, result.stop_reason
        )

    # --- the checks of `prepare` ---------------------------------------------------
    def _check_model(self, model: str) -> None:
        served = self.engine.info.model_name
        if model != served:
            raise ModelNotFound(
                f"model {model!r} is not served here; this server serves {served!r}",
                param="model",
                code="model_not_found",
            )

    def _strategy(self, request: ServiceRequest) -> Strategy[Any] | None:
        if request.n > self.limits.max_n:
            raise InvalidRequest(f"{field_ref('n')} must be at most {self.limits.max_n}", param="n")
        name = request.choice.strategy if request.choice is not None else None
        if name is None:
            return None
        strategy = self.strategies.get(name)
        if strategy is None:
            known = ", ".join(self.strategies)
            raise InvalidRequest(
                f"unknown strategy {name!r}; known: {known}",
                param="choice.strategy",
                code="unknown_strategy",
            )
        if request.n != 1:
            raise InvalidRequest(
                f"a strategy returns one choice: leave {field_ref('n')} at 1", param="n"
            )
        return strategy

    async def _prompt(self, request: ServiceRequest) -> tuple[list[dict[str, Any]], list[int]]:
        """Messages (what strategies re-render, e.g. for refinement) and prompt ids."""
        if request.messages is not None:
            try:
                ids = await self.engine.render_chat(request.messages, request.rendering)
            except EngineRejected as exc:
                raise _invalid(exc, "rendering", fallback="messages") from exc
            return request.messages, ids
        if isinstance(request.prompt, str):
            messages = [{"role": "user", "content": request.prompt}]
            special = request.rendering.add_special_tokens
            return messages, await self.engine.tokenize(request.prompt, add_special_tokens=special)
        ids = list(request.prompt or [])
        if not ids or any(t < 0 for t in ids):
            raise InvalidRequest("prompt token ids must be non-negative", param="prompt")
        top = self.engine.info.max_token_id
        if top is not None and max(ids) > top:
            raise InvalidRequest(
                f"token id {max(ids)} is not in this model's vocabulary (0..{top})",
                param="prompt",
            )
        text = await self.engine.detokenize(ids)
        return [{"role": "user", "content": text}], ids

    def _truncated(self, ids: list[int], rendering: PromptRendering) -> list[int]:
        """vLLM's `truncate_prompt_tokens`: keep that many prompt tokens (-1: the context
        less one, room for one token), cut from the side the request names, else the
        tokenizer's."""
        keep = rendering.truncate_prompt_tokens
        if keep is None:
            return ids
        context = self.engine.info.max_model_len
        if keep > context:  # vLLM's words
            raise InvalidRequest(
                f"truncate_prompt_tokens={keep} cannot be greater than max_model_len = "
                f"{context}. Please request a smaller truncation size.",
                param="rendering.truncate_prompt_tokens",
            )
        keep = context - 1 if keep < 0 else keep
        if keep >= len(ids):
            return ids
        side = rendering.truncation_side or self.engine.info.truncation_side
        return ids[len(ids) - keep :] if side == "left" else ids[:keep]

    def _max_tokens(self, request: ServiceRequest, prompt_tokens: int) -> int:
        """The per-sample token limit: the client's if it fits the context, else a
        clear error; without one, the service default clipped to the room left."""
        context = self.engine.info.max_model_len
        room = context - prompt_tokens
        if room < 1:
            raise InvalidRequest(
                f"the prompt is {prompt_tokens} tokens; this model's context is {context}",
                param="messages" if request.messages is not None else "prompt",
                code="context_length_exceeded",
            )
        if "max_tokens" not in request.sampling.model_fields_set:
            return min(self.limits.default_max_tokens, room)
        asked = request.sampling.max_tokens
        if asked > room:
            raise _does_not_fit("sampling.max_tokens", asked, prompt_tokens, context)
        return asked

    def _params(
        self,
        strategy: Strategy[Any],
        choice: StrategyChoice,
        asked: SamplingSpec,
        max_tokens: int,
    ) -> StrategyParams:
        """Typed strategy parameters. The request's own sampling fields are the defaults
        of the strategy's `sampling` block; what the parameters' `sampling` says wins."""
        raw = dict(choice.params)
        given = raw.get("sampling") or {}
        if not isinstance(given, dict):
            param = "choice.params.sampling"
            raise InvalidRequest(f"{field_ref(param)} must be an object", param=param)
        defaults = strategy.params_model.model_fields["sampling"].default.model_dump()
        from_request = asked.model_dump(include=asked.model_fields_set)
        try:
            given = SamplingSpec.by_field_name(given)
        except ValueError as exc:
            param = "choice.params.sampling"
            raise InvalidRequest(f"{field_ref(param)}: {exc}", param=param) from exc
        sampling = {**defaults, **from_request, "max_tokens": max_tokens, **given}
        if asked.keep_logprobs:  # the client's top-k, or more where the strategy reads more
            own = {**defaults, **given}.get("logprobs")
            sampling["logprobs"] = max(asked.logprobs or 0, own or 0)
        raw["sampling"] = sampling
        try:
            return strategy.parse_params(raw)
        except ValidationError as exc:
            where, message, kind = first_problem(exc)
            param = f"choice.params.{where}" if where else "choice.params"
            message = "unknown parameter" if kind == "extra_forbidden" else message
            raise InvalidRequest(f"{field_ref(param)}: {message}", param=param) from exc

    def _plain_limits(self, request: ServiceRequest, sampling: SamplingSpec) -> BudgetLimits:
        """Plain sampling obeys the same cap as a strategy: n x max_tokens within the
        request cap; `ttscale.params`/`budget` without a strategy are a mistake."""
        choice = request.choice
        if choice is not None and (choice.params or choice.budget != BudgetLimits()):
            raise InvalidRequest(
                f"{field_ref('choice.params')} and {field_ref('choice.budget')} need a "
                f"{field_ref('choice.strategy')}",
                param="choice.strategy",
            )
        asked = request.n * sampling.max_tokens
        cap = self.limits.max_request_tokens
        if asked > cap:
            raise InvalidRequest(
                f"{field_ref('n')} x {field_ref('sampling.max_tokens')} = {asked} exceeds "
                f"this server's limit of {cap} tokens",
                param="sampling.max_tokens",
            )
        return BudgetLimits(max_generated_tokens=cap)

    def _check_lengths(self, params: StrategyParams, prompt_tokens: int) -> None:
        """A per-sample length given in the parameters must fit the context too: one
        rule for every place a length can be given."""
        asked = params.sampling.max_tokens
        context = self.engine.info.max_model_len
        if prompt_tokens + asked > context:
            raise _does_not_fit("choice.params.sampling.max_tokens", asked, prompt_tokens, context)

    async def _check_engine(self, sampling: SamplingSpec, at: str) -> None:
        """The engine's own checks of the sampling fields (vocabulary, grammars)."""
        try:
            await self.engine.check(sampling)
        except EngineRejected as exc:
            raise _invalid(exc, at) from exc

    def _check_tool_calling(self, sampling: SamplingSpec) -> None:
        """Calls need the server's tool-call parser, and "auto" its leave for the model
        to choose: vLLM's server refuses them otherwise, in these words."""
        calling = sampling.tool_calling
        if calling is None or self.engine.info.tool_call_parser is not None:
            return
        if calling.choice == "auto":
            raise InvalidRequest(
                '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser '
                "to be set",
                param="tool_choice",
            )
        named = f'function "{calling.function}"' if calling.function else f'"{calling.choice}"'
        raise InvalidRequest(
            f"tool_choice={named} requires --tool-call-parser to be set", param="tool_choice"
        )

    def _check_thinking(self, sampling: SamplingSpec, at: str) -> None:
        """A thinking budget needs a reasoning model's parser, and room for the answer
        after it: `max_tokens` counts thinking and answer together."""
        budget = sampling.thinking_token_budget
        if budget is None:
            return
        param = f"{at}.thinking_token_budget"
        info = self.engine.info
        if info.reasoning_parser is None:
            raise InvalidRequest(
                f"{field_ref(param)} needs a reasoning model: this server runs no reasoning "
                "parser (ttscale serve --reasoning-parser NAME)",
                param=param,
            )
        if not info.thinking_budgets:
            raise InvalidRequest(
                f"{field_ref(param)}: the reasoning parser {info.reasoning_parser!r} names "
                "no strings to close a thought with, so vLLM cannot keep a thinking budget",
                param=param,
            )
        if budget >= sampling.max_tokens:
            raise InvalidRequest(
                f"{field_ref(param)}={budget} leaves no room for the answer: "
                f"{field_ref(at + '.max_tokens')}={sampling.max_tokens} counts thinking and "
                "answer together",
                param=param,
            )

    def _budget_limits(self, params: StrategyParams, limits: BudgetLimits) -> BudgetLimits:
        """Apply the service's limits: refuse what exceeds them, cap what is unset."""
        max_n = self.limits.max_n
        requested = params.samples_requested()
        if requested is not None and requested > max_n:
            raise InvalidRequest(
                f"n={requested} exceeds this server's limit of {max_n}", param="choice.params.n"
            )
        planned = params.samples_at_once()
        if planned is not None and planned > max_n:
            raise InvalidRequest(
                f"these parameters draw {planned} samples at once; this server's limit is {max_n}",
                param="choice.params",
            )
        wall = limits.max_wall_s
        if wall is not None and wall < self.limits.min_wall_s:
            raise InvalidRequest(
                f"a budget of {wall} s cannot pay for one sample "
                f"(at least {self.limits.min_wall_s} s)",
                param="choice.budget.max_wall_s",
            )
        cap, floor = self.limits.max_request_tokens, self.limits.min_sample_tokens
        asked = limits.max_generated_tokens
        param = "choice.budget.max_generated_tokens"
        if asked is None:
            return limits.model_copy(update={"max_generated_tokens": cap})
        if asked > cap:
            raise InvalidRequest(
                f"max_generated_tokens={asked} exceeds this server's limit of {cap}", param=param
            )
        if asked < floor:
            raise InvalidRequest(
                f"a budget of {asked} generated tokens cannot pay for one sample "
                f"(at least {floor} tokens)",
                param=param,
            )
        return limits


def _invalid(exc: EngineRejected, at: str, *, fallback: str | None = None) -> InvalidRequest:
    """The engine's refusal as the service's, its field under `at` (the field named by
    the refusal, else `fallback`, else `at` itself)."""
    param = f"{at}.{exc.param}" if exc.param else (fallback or at)
    return InvalidRequest(str(exc), param=param)


def _does_not_fit(param: str, asked: int, prompt_tokens: int, context: int) -> InvalidRequest:
    """A per-sample length that the prompt leaves no room for, wherever it was given."""
    return InvalidRequest(
        f"{field_ref(param)}={asked} does not fit: the prompt is {prompt_tokens} tokens and "
        f"this model's context is {context}",
        param=param,
        code="context_length_exceeded",
    )


def _prompt_read_once(prepared: PreparedRequest, samples: list[Sample]) -> Spending:
    """What plain sampling spent, its prompt counted once however many choices, as vLLM's
    server counts it (the engine's prefix cache reads it once): a plain request is
    billed as a client of vLLM expects. A strategy's usage counts every read."""
    spent = prepared.spent()
    cached = max((s.cached_prompt_tokens for s in samples), default=0)
    prompt = len(prepared.prompt_ids)
    return spent.model_copy(
        update={"prompt_tokens": prompt, "cached_prompt_tokens": min(cached, prompt)}
    )


def _chosen(result: StrategyResult) -> Candidate | None:
    return next((c for c in result.candidates if c.index == result.chosen), None)


def _finish_reason(result: StrategyResult, chosen: Candidate | None) -> FinishReason:
    """The chosen candidate's own finish reason ("length" when nothing was chosen)."""
    if chosen is None or not result.text:
        return "length"
    return "length" if chosen.finish_reason == "abort" else chosen.finish_reason


def _evidence(
    result: StrategyResult, params: StrategyParams, limits: BudgetLimits, include_text: bool
) -> dict[str, Any]:
    """The `ttscale` field of a response: what was run, what it found, what it spent."""
    data = result.model_dump(exclude={"usage"})
    if not include_text:  # the pick's own are in the message; every sample's only if asked
        data.pop("content", None)
        data.pop("reasoning", None)
        for candidate in data["candidates"]:
            for text in ("text", "content", "reasoning"):
                candidate.pop(text, None)
    data["params"] = params.model_dump()
    data["budget"] = {
        "granted": limits.model_dump(),
        "spent": {
            **result.usage.model_dump(),
            "answer_tokens": result.usage.generated_tokens - result.usage.reasoning_tokens,
            "verifier_tokens": result.usage.verifier_tokens,
            "total_flops": result.usage.total_flops,
            "prefix_cache_hit_rate": result.usage.prefix_cache_hit_rate,
        },
    }
    return data
