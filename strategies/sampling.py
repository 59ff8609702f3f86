"""Budgeted parallel sampling: the loop every sampling strategy shares.

Keeps up to `parallel` single-sample generations in flight (a fixed number, or one that
follows the engine's load), starts each only if the budget reserves room for it and the
strategy does not hold it back (`hold`: the samples in flight may make it needless), hands
each finished sample to the strategy as soon as it finishes (so votes can stop the run
early), and on any stop aborts what is still running and bills the partial work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from ttscale.engine.protocol import Engine, Generation
from ttscale.engine.types import Sample, SamplingSpec
from ttscale.verifiers.structured import AnswerFormat

from .budget import Budget, Reservation
from .in_flight import EngineLoad, FollowLoad, InFlight

StopReason = Literal["completed", "budget", "early_stop"]
OnSample = Callable[[Sample], Awaitable[bool]]
"""Called with each finished sample; returning True stops the run (early exit)."""
Report = Callable[..., Awaitable[None]]
Hold = Callable[[int], bool]
"""Called with the number of samples in flight before another starts; returning True
starts none until one of them finishes (their answers may make it needless)."""
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Running:
    generation: Generation
    reservation: Reservation
    index: int


@dataclass
class SamplingOutcome:
    finished: list[Sample] = field(default_factory=list)
    aborted: list[Sample] = field(default_factory=list)
    stop_reason: StopReason = "completed"
    most_in_flight: int = 0


@dataclass
class _Draw:
    """The state of one `sample_until` call: what is running, what is left to start."""

    engine: Engine
    prompt_ids: Sequence[int]
    spec: SamplingSpec
    count: int
    budget: Budget
    in_flight: InFlight
    load: EngineLoad
    first_index: int
    request_id: str
    hold: Hold | None = None
    thinking_decay: float = 1.0
    answer_format: AnswerFormat = field(default_factory=AnswerFormat)
    running: dict[asyncio.Task[Sample], _Running] = field(default_factory=dict)
    started: int = 0
    most_running: int = 0
    budget_refused: bool = False

    def limit(self) -> int:
        if isinstance(self.in_flight, FollowLoad):
            return self.in_flight.limit(len(self.running), self.load)
        return self.in_flight

    def held(self) -> bool:
        """Whether the strategy waits for the samples in flight before starting another
        (never with none in flight: the run would end without reason)."""
        return bool(self.running) and self.hold is not None and self.hold(len(self.running))

    def start_more(self) -> None:
        """Start samples while there is room in flight and in the budget."""
        limit = self.limit()
        while self.started < self.count and len(self.running) < limit and not self.held():
            reservation = self.budget.reserve(self.spec.max_tokens, self.spec.min_tokens)
            if reservation is None:
                self.budget_refused = True
                break
            index = self.first_index + self.started
            drawn_before = self.budget.usage.samples_started - 1  # in this request
            thinking = thinking_budget(
                self.spec, drawn_before, self.thinking_decay, reservation.max_tokens
            )
            one = self.spec.replace(
                max_tokens=reservation.max_tokens,
                seed=self.spec.sample_seed(index),
                thinking_token_budget=thinking,
            )
            generation = self.engine.generate(
                self.prompt_ids, one, request_id=f"{self.request_id}-{index}"
            )
            task = asyncio.ensure_future(_first_sample(generation, index))
            self.running[task] = _Running(generation, reservation, index)
            self.load.running += 1
            self.started += 1
        self.most_running = max(self.most_running, len(self.running))

    def settle(self, task: asyncio.Task[Sample]) -> Sample:
        started = self.running.pop(task)
        self.load.running -= 1
        sample = task.result()
        self.budget.settle(started.reservation, sample)
        return sample


async def sample_until(
    engine: Engine,
    prompt_ids: Sequence[int],
    spec: SamplingSpec,
    count: int,
    budget: Budget,
    *,
    parallel: InFlight | None = None,
    on_sample: OnSample | None = None,
    hold: Hold | None = None,
    first_index: int = 0,
    report: Report | None = None,
    request_id: str = "req",
    load: EngineLoad | None = None,
    thinking_decay: float = 1.0,
    answer_format: AnswerFormat | None = None,
) -> SamplingOutcome:
    """Draw up to `count` samples of `prompt_ids` under `spec`.

    Sample i gets seed `spec.sample_seed(first_index + i)` and engine request id
    `{request_id}-{first_index + i}`, so results do not depend on finishing order and
    every engine request can be traced to its API request. Samples are numbered from
    `first_index` in `Sample.index`. Each finished sample is announced through `report`.
    Samples in flight are counted in `load` (the service's) while they run. Each
    sample's thinking budget is `thinking_budget`'s (`thinking_decay` shrinks it from
    one sample of the request to the next). The `sample` events read each sample's answer
    in `answer_format` (default: boxed).
    """
    in_flight = parallel if isinstance(parallel, FollowLoad) else max(1, parallel or count)
    load = load if load is not None else EngineLoad()
    draw = _Draw(
        engine,
        prompt_ids,
        spec,
        count,
        budget,
        in_flight,
        load,
        first_index,
        request_id,
        hold,
        thinking_decay,
        answer_format or AnswerFormat(),
    )
    outcome = SamplingOutcome()
    try:
        draw.start_more()
        while draw.running:
            stop_reason = await _next_finished(draw, outcome, on_sample, report)
            if stop_reason is not None:
                outcome.stop_reason = stop_reason
                break
            draw.start_more()
        else:
            if draw.budget_refused and draw.started < count:
                outcome.stop_reason = "budget"
    finally:
        if draw.running:  # shielded: a second cancellation must not leave samples running
            await asyncio.shield(_abort_all(draw, outcome))
    if report is not None and outcome.aborted:  # a stop rule or the budget ended them
        await report(
            "aborted",
            indices=[s.index for s in outcome.aborted],
            tokens=[s.num_tokens for s in outcome.aborted],
            generated_tokens=budget.usage.generated_tokens,
        )
    outcome.finished.sort(key=lambda s: s.index)
    outcome.most_in_flight = draw.most_running
    return outcome


def thinking_budget(
    spec: SamplingSpec, drawn_before: int, decay: float, max_tokens: int
) -> int | None:
    """The thinking budget of a request's sample after `drawn_before` others: the spec's,
    shrunk by `decay` for each of them (a budget above zero stays at least one token),
    and always short of the sample's `max_tokens` (its grant may be below the spec's),
    so that the answer has room. None without a budget."""
    budget = spec.thinking_token_budget
    if budget is None:
        return None
    if budget and decay < 1.0:
        budget = max(1, int(budget * decay**drawn_before))
    return min(budget, max(0, max_tokens - 1))


async def _next_finished(
    draw: _Draw, outcome: SamplingOutcome, on_sample: OnSample | None, report: Report | None
) -> StopReason | None:
    """Wait for the next samples to finish and hand them on; a reason means stop."""
    done, _ = await asyncio.wait(
        draw.running, timeout=draw.budget.time_left_s(), return_when=asyncio.FIRST_COMPLETED
    )
    if not done:  # wall-time cap reached
        return "budget"
    stop = False
    for task in done:
        sample = draw.settle(task)
        outcome.finished.append(sample)
        if report is not None:
            await report(
                "sample",
                index=sample.index,
                tokens=sample.num_tokens,
                finish_reason=sample.finish_reason,
                answer=draw.answer_format.extract(sample.answer_text),
                reasoning_tokens=sample.reasoning_tokens,
                mean_entropy=sample.mean_entropy,
                generated_tokens=draw.budget.usage.generated_tokens,
                total_flops=draw.budget.usage.total_flops,
            )
        if on_sample is not None and await on_sample(sample):
            stop = True
    return "early_stop" if stop else None


async def _first_sample(generation: Generation, index: int) -> Sample:
    result = await generation
    sample = result.samples[0]
    sample.index = index
    return sample


async def _abort_all(draw: _Draw, outcome: SamplingOutcome) -> None:
    running, budget = draw.running, draw.budget
    try:
        aborts = await asyncio.gather(
            *(started.generation.abort() for started in running.values()),
            return_exceptions=True,
        )
        for (task, started), aborted in zip(running.items(), aborts, strict=True):
            task.cancel()
            if isinstance(aborted, BaseException):
                continue
            sample = aborted.samples[0]
            sample.index = started.index
            budget.settle(started.reservation, sample)
            if sample.finish_reason == "abort":
                outcome.aborted.append(sample)
            else:  # finished in the race with the abort: keep it, it is paid for
                outcome.finished.append(sample)
    finally:  # whatever went wrong, these samples no longer count as the service's load
        draw.load.running -= len(running)
        running.clear()


async def gather_or_cancel(work: Iterable[Awaitable[T]]) -> list[T]:
    """Run `work` concurrently (so the engine batches it) and return the results in
    order. If one fails or the caller is cancelled, the others are cancelled and waited
    for, so their engine samples are aborted and billed rather than left running
    (plain `asyncio.gather` would leave the siblings of a failure running)."""
    tasks = [asyncio.ensure_future(item) for item in work]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))
        raise
