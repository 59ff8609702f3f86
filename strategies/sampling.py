"""Budgeted parallel sampling: the loop every sampling strategy shares.

Keeps up to `parallel` single-sample generations in flight, starts each only if the
budget reserves room for it, hands each finished sample to the strategy as soon as it
finishes (so votes can stop the run early), and on any stop aborts what is still
running and bills the partial work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from server.engine.protocol import Engine, Generation
from server.engine.types import Sample, SamplingSpec
from verifiers.extraction import extract_answer

from .budget import Budget, Reservation

StopReason = Literal["completed", "budget", "early_stop"]
OnSample = Callable[[Sample], Awaitable[bool]]
"""Called with each finished sample; returning True stops the run (early exit)."""
Report = Callable[..., Awaitable[None]]


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


async def sample_until(
    engine: Engine,
    prompt_ids: Sequence[int],
    spec: SamplingSpec,
    count: int,
    budget: Budget,
    *,
    parallel: int | None = None,
    on_sample: OnSample | None = None,
    first_index: int = 0,
    report: Report | None = None,
) -> SamplingOutcome:
    """Draw up to `count` samples of `prompt_ids` under `spec` (its `n` is ignored).

    Sample i gets seed `spec.seed + first_index + i`, so results do not depend on
    finishing order. Samples are numbered from `first_index` in `Sample.index`. Each
    finished sample is announced through `report` (streamed progress events).
    """
    outcome = SamplingOutcome()
    limit = max(1, parallel or count)
    running: dict[asyncio.Task[Sample], _Running] = {}
    next_index = 0
    budget_refused = False

    def start_more() -> None:
        nonlocal next_index, budget_refused
        while next_index < count and len(running) < limit:
            reservation = budget.reserve(spec.max_tokens)
            if reservation is None:
                budget_refused = True
                return
            index = first_index + next_index
            seed = None if spec.seed is None else spec.seed + index
            one = spec.model_copy(
                update={"n": 1, "max_tokens": reservation.max_tokens, "seed": seed}
            )
            generation = engine.generate(prompt_ids, one)
            task = asyncio.ensure_future(_first_sample(generation, index))
            running[task] = _Running(generation, reservation, index)
            next_index += 1

    try:
        start_more()
        while running:
            timeout = budget.time_left_s()
            done, _ = await asyncio.wait(
                running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:  # wall-time cap reached
                outcome.stop_reason = "budget"
                break
            stop = False
            for task in done:
                started = running.pop(task)
                sample = task.result()
                budget.settle(started.reservation, sample)
                outcome.finished.append(sample)
                if report is not None:
                    await report(
                        "sample",
                        index=sample.index,
                        tokens=sample.num_tokens,
                        finish_reason=sample.finish_reason,
                        answer=extract_answer(sample.text),
                        generated_tokens=budget.usage.generated_tokens,
                    )
                if on_sample is not None and await on_sample(sample):
                    stop = True
            if stop:
                outcome.stop_reason = "early_stop"
                break
            start_more()
        else:
            if budget_refused and next_index < count:
                outcome.stop_reason = "budget"
    finally:
        if running:  # shielded: a second cancellation must not leave samples running
            await asyncio.shield(_abort_all(running, budget, outcome))
    outcome.finished.sort(key=lambda s: s.index)
    return outcome


async def _first_sample(generation: Generation, index: int) -> Sample:
    result = await generation
    sample = result.samples[0]
    sample.index = index
    return sample


async def _abort_all(
    running: dict[asyncio.Task[Sample], _Running], budget: Budget, outcome: SamplingOutcome
) -> None:
    aborts = await asyncio.gather(
        *(started.generation.abort() for started in running.values()), return_exceptions=True
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
    running.clear()
