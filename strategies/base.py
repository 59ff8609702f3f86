"""What every strategy receives and returns.

A strategy is a plain async function `(context, params) -> StrategyResult` over the
engine protocol, with its own parameter model (`params.StrategyParams`); nothing it
touches is shared with another request except the engine and the (stateless to it)
verifiers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, Field

from ttscale.engine.lifecycle import close_together
from ttscale.engine.protocol import Engine
from ttscale.engine.types import Position, Sample, SamplingSpec, ToolCall
from ttscale.verifiers.extraction import extract_boxed
from ttscale.verifiers.math_grader import MathGrader
from ttscale.verifiers.protocol import OutcomeVerifier, ProcessVerifier
from ttscale.verifiers.structured import AnswerFormat

from .budget import Budget, Spending
from .errors import InvalidRequest, field_ref
from .in_flight import EngineLoad, InFlight
from .params import StrategyParams, VerifierUse
from .sampling import Hold, OnSample, SamplingOutcome, StopReason, sample_until

ProgressCallback = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Verifiers:
    """The verifiers this server has; a strategy uses what its parameters name."""

    grader: MathGrader
    outcome: dict[str, OutcomeVerifier] = field(default_factory=dict)
    process: dict[str, ProcessVerifier] = field(default_factory=dict)

    def catalog(self) -> list[dict[str, Any]]:
        """Every verifier once: its name, kinds, model and backend."""
        entries = []
        for name in dict.fromkeys([*self.outcome, *self.process]):
            verifier = self.outcome.get(name) or self.process.get(name)
            kinds = [k for k, table in (("outcome", self.outcome), ("process", self.process))
                     if name in table]  # fmt: skip
            entries.append({"name": name, "kinds": kinds, **verifier.describe()})
        return entries

    def check(self, use: VerifierUse, params_path: str) -> None:
        """Refuse a verifier this server does not have, or has only as the other kind;
        `params_path` is where the strategy's parameters sit in the request."""
        tables = {"outcome": self.outcome, "process": self.process}
        wanted = [use.kind] if use.kind else ["outcome", "process"]
        if any(use.name in tables[kind] for kind in wanted):
            return
        valid = sorted({name for kind in wanted for name in tables[kind]})
        what = f"{use.kind} verifier" if use.kind else "verifier"
        param = f"{params_path}.{use.param}"
        names = ", ".join(valid) or "none"
        raise InvalidRequest(
            f"{field_ref(param)}: no {what} named {use.name!r}; valid: {names}",
            param=param,
            code="unknown_verifier",
        )

    def for_request(self, grading_deadline_s: float) -> Verifiers:
        """The same verifiers for one request, whose answer grading has a total
        deadline and a capped share of the grading workers (`MathGrader.for_request`)."""
        return replace(self, grader=self.grader.for_request(grading_deadline_s))

    async def close(self) -> None:
        """Stop the grading workers and every reward model this process runs, all at once
        (`close_together`); joining the workers blocks, so it runs off the loop."""
        every = [*self.outcome.values(), *self.process.values()]
        unique = {id(v): v for v in every}.values()  # a judge may be in both tables
        closes = [verifier.close() for verifier in unique]
        await close_together(asyncio.to_thread(self.grader.close), *closes)


@dataclass
class StrategyContext:
    """One request's view of the world: its engine, verifiers, budget, prompt and id, and
    the service's count of samples in flight (`load`, shared by its requests)."""

    engine: Engine
    verifiers: Verifiers
    budget: Budget
    messages: list[dict[str, str]]
    prompt_ids: list[int]
    question: str
    request_id: str = "req"
    progress: ProgressCallback | None = None
    load: EngineLoad = field(default_factory=EngineLoad)
    thinking_decay: float = 1.0
    """How the request's thinking budget shrinks from sample to sample (`sampling`)."""
    answer_format: AnswerFormat = field(default_factory=AnswerFormat)
    """How `sample` progress events read each sample's answer (the service sets it from
    the parameters' `answer`; strategies read answers by their parameters)."""

    async def sample(
        self,
        spec: SamplingSpec,
        count: int,
        *,
        prompt_ids: Sequence[int] | None = None,
        parallel: InFlight | None = None,
        on_sample: OnSample | None = None,
        hold: Hold | None = None,
        first_index: int = 0,
    ) -> SamplingOutcome:
        """`sample_until` on this request's engine, budget, id and progress reporting;
        the prompt is the request's own unless `prompt_ids` says otherwise. A prompt the
        strategy grew past the context (refinements, continuations) draws nothing and
        says "budget": the context is a budget too."""
        prompt = self.prompt_ids if prompt_ids is None else prompt_ids
        if len(prompt) >= self.engine.info.max_model_len:
            return SamplingOutcome(stop_reason="budget")
        spec = spec.replace(
            max_tokens=min(spec.max_tokens, self.engine.info.max_model_len - len(prompt))
        )
        return await sample_until(
            self.engine,
            prompt,
            spec,
            count,
            self.budget,
            parallel=parallel,
            on_sample=on_sample,
            hold=hold,
            first_index=first_index,
            report=self.report,
            request_id=self.request_id,
            load=self.load,
            thinking_decay=self.thinking_decay,
            answer_format=self.answer_format,
        )

    async def report(self, event: str, **data: Any) -> None:
        """Progress events (streamed to clients that asked for them)."""
        if self.progress is not None:
            await self.progress({"event": event, **data})


AnswerSource = Literal["answer", "thinking"]


class Candidate(BaseModel):
    """One sample as the response reports it."""

    index: int
    answer: str | None = Field(
        description="the answer as the parameters' `answer` reads it and the vote compares "
        "it (canonical JSON for json and tool_call answers); None: no answer"
    )
    answer_source: AnswerSource | None = Field(
        None, description="where the answer was read: the answer part, or (asked) the thinking"
    )
    answer_class: int | None = None
    text: str
    content: str | None = Field(
        None, description="a reasoning model's answer part (None: the text is the answer)"
    )
    reasoning: str | None = Field(None, description="a reasoning model's thinking")
    tokens: int
    reasoning_tokens: int = 0
    finish_reason: str
    temperature: float | None = None
    mean_entropy: float | None = None
    mean_logprob: float | None = None
    scores: dict[str, float | list[float]] = Field(default_factory=dict)
    token_ids: list[int] | None = Field(None, exclude=True)
    """The sample's token ids (what `return_token_ids` returns with the pick)."""
    logprobs: list[Position] | None = Field(None, exclude=True)
    """The sample's log-probabilities when the client asked for them: returned with the
    pick, never in the evidence."""
    tool_calls: list[ToolCall] | None = Field(None, exclude=True)
    """The calls read from the sample (returned with the pick; the evidence shows them as
    the answer, name and parsed arguments)."""

    @property
    def answer_text(self) -> str:
        """What verifiers read: the answer part, or the whole text."""
        return self.text if self.content is None else self.content


class StrategyResult(BaseModel):
    strategy: str
    text: str
    content: str | None = Field(None, description="the pick's answer part (reasoning models)")
    reasoning: str | None = Field(None, description="the pick's thinking (reasoning models)")
    answer: str | None
    chosen: int | None = Field(None, description="index of the chosen candidate")
    candidates: list[Candidate]
    votes: dict[str, float] = Field(default_factory=dict, description="answer -> vote weight")
    stop_reason: StopReason
    explanation: str
    details: dict[str, Any] = Field(default_factory=dict)
    usage: Spending


def read_answer(
    answer_text: str,
    reasoning: str | None,
    params: StrategyParams,
    *,
    numeric_fallback: bool = True,
) -> tuple[str | None, AnswerSource | None]:
    """The answer of an answer part in the parameters' answer format, and where it was
    read. A sample with none (a thought cut before it closed) falls back to the last boxed
    answer of its thinking only when `answer_from_thinking` asks, and only for boxed
    answers (the parameters refuse it for other kinds): an answer boxed inside the
    thoughts is a draft, not the answer."""
    answer = params.answer.extract(answer_text, numeric_fallback=numeric_fallback)
    if answer is not None:
        return answer, "answer"
    if params.answer_from_thinking and params.answer.by_math and reasoning:
        drafted = extract_boxed(reasoning)
        if drafted is not None:
            return drafted, "thinking"
    return None, None


def to_candidate(
    sample: Sample, params: StrategyParams, *, temperature: float | None = None
) -> Candidate:
    """A sample as evidence, its answer read by the parameters (`read_answer`)."""
    answer, source = read_answer(sample.answer_text, sample.reasoning, params)
    return Candidate(
        index=sample.index,
        answer=answer,
        answer_source=source,
        text=sample.text,
        content=sample.content,
        reasoning=sample.reasoning,
        tokens=sample.num_tokens,
        reasoning_tokens=sample.reasoning_tokens,
        finish_reason=sample.finish_reason,
        temperature=temperature,
        mean_entropy=sample.mean_entropy,
        mean_logprob=sample.mean_logprob,
        logprobs=sample.position_logprobs,
        token_ids=sample.token_ids,
        tool_calls=sample.tool_calls,
    )


def stepped_candidate(
    index: int,
    params: StrategyParams,
    *,
    text: str,
    answer_text: str,
    reasoning: str | None,
    tokens: int,
    reasoning_tokens: int,
    finish_reason: str,
    scores: dict[str, float | list[float]],
) -> Candidate:
    """A solution drawn step by step (search, particles) as evidence: its answer is read
    from its answer part by the parameters, never guessed from a bare number."""
    answer, source = read_answer(answer_text, reasoning, params, numeric_fallback=False)
    return Candidate(
        index=index,
        answer=answer,
        answer_source=source,
        text=text,
        content=answer_text if reasoning is not None else None,
        reasoning=reasoning,
        tokens=tokens,
        reasoning_tokens=reasoning_tokens,
        finish_reason=finish_reason,
        scores=scores,
    )


def finish_result(
    ctx: StrategyContext,
    strategy: str,
    candidates: list[Candidate],
    chosen: int | None,
    *,
    stop_reason: StopReason,
    explanation: str,
    votes: dict[str, float] | None = None,
    details: dict[str, Any] | None = None,
) -> StrategyResult:
    """The result with `candidates[chosen]` as the pick (None: no pick), usage closed;
    a request that grouped answers also reports what the grading cost (`grading`)."""
    pick = candidates[chosen] if chosen is not None else None
    tally = ctx.verifiers.grader.tally
    if tally is not None and tally.calls:
        details = {**(details or {}), "grading": tally.evidence()}
    return StrategyResult(
        strategy=strategy,
        text=pick.text if pick else "",
        content=pick.content if pick else None,
        reasoning=pick.reasoning if pick else None,
        answer=pick.answer if pick else None,
        chosen=pick.index if pick else None,
        candidates=candidates,
        votes=votes or {},
        stop_reason=stop_reason,
        explanation=explanation,
        details=details or {},
        usage=ctx.budget.finish(),
    )
