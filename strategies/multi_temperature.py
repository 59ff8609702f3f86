"""Multi-temperature sampling and voting ("On the Role of Temperature Sampling in
Test-Time Scaling", arXiv 2510.02611).

Samples are spread over a temperature grid; answers are voted within each temperature,
then the temperature winners vote (one vote each; ties go to the larger summed
within-temperature share, then to the answer seen first). After a first round the run
exits early when, at every temperature, the winner's share of that temperature's
samples is >= `intra_threshold` and the fraction of temperatures whose winner is the
overall winner is >= `agreement_threshold`. At temperature 0 one sample is drawn, since
greedy decoding would repeat itself.
"""

from __future__ import annotations

import asyncio

from pydantic import Field, field_validator

from ttscale.engine.types import Sample
from ttscale.verifiers.aggregate import plurality

from .base import (
    Candidate,
    StrategyContext,
    StrategyResult,
    finish_result,
    to_candidate,
)
from .params import StrategyParams
from .registry import Strategy
from .sampling import SamplingOutcome
from .voting import candidate_votes, class_spelling, label_answers, pick_member

_SEED_STRIDE = 100_000  # seeds of different temperatures never collide


class MultiTemperatureParams(StrategyParams):
    scale_knob = "samples_per_temperature"

    temperatures: list[float] = Field([0.0, 0.4, 0.8, 1.2], min_length=1, max_length=32)
    samples_per_temperature: int = Field(4, ge=1, le=256)
    first_round: int = Field(2, ge=1, description="samples per temperature before the exit check")
    intra_threshold: float = Field(0.8, ge=0.0, le=1.0)
    agreement_threshold: float = Field(1.0, ge=0.0, le=1.0)

    @field_validator("temperatures")
    @classmethod
    def _valid_temperatures(cls, values: list[float]) -> list[float]:
        if any(t < 0 or t > 2 for t in values):
            raise ValueError("temperatures must lie in [0, 2]")
        if len(set(values)) != len(values):
            raise ValueError("temperatures must be distinct")
        return values

    def samples_at_once(self) -> int:
        """The most samples one round draws together (the server's max_n bounds it)."""
        first = sum(min(self.first_round, self.quota(t)) for t in self.temperatures)
        total = sum(self.quota(t) for t in self.temperatures)
        return max(first, total - first)

    def quota(self, temperature: float) -> int:
        return 1 if temperature == 0 else self.samples_per_temperature

    def samples_in_all(self) -> int:
        return sum(self.quota(t) for t in self.temperatures)


async def _draw(
    ctx: StrategyContext, params: MultiTemperatureParams, slot: int, start: int, count: int
) -> SamplingOutcome:
    temperature = params.temperatures[slot]
    spec = params.sampling.replace(temperature=temperature)
    return await ctx.sample(spec, count, first_index=slot * _SEED_STRIDE + start)


def _vote(
    candidates: list[Candidate], params: MultiTemperatureParams
) -> tuple[int | None, dict[float, dict], float]:
    """(overall winner, per-temperature table, agreement fraction)."""
    table: dict[float, dict] = {}
    for temperature in params.temperatures:
        here = [c for c in candidates if c.temperature == temperature]
        winner, votes = plurality([c.answer_class for c in here])
        share = votes.get(winner, 0.0) / len(here) if here and winner is not None else 0.0
        table[temperature] = {"winner": winner, "share": share, "samples": len(here)}
    ballots: dict[int, tuple[float, float]] = {}
    for row in table.values():
        if row["winner"] is not None:
            count, shares = ballots.get(row["winner"], (0.0, 0.0))
            ballots[row["winner"]] = (count + 1, shares + row["share"])
    order = {c.answer_class: i for i, c in reversed(list(enumerate(candidates)))}
    overall = max(ballots, key=lambda a: (*ballots[a], -order.get(a, 0))) if ballots else None
    voting = [row for row in table.values() if row["samples"]]
    agreement = sum(row["winner"] == overall for row in voting) / len(voting) if voting else 0.0
    return overall, table, agreement


async def multi_temperature(ctx: StrategyContext, params: MultiTemperatureParams) -> StrategyResult:
    slots = range(len(params.temperatures))
    first = [min(params.first_round, params.quota(params.temperatures[s])) for s in slots]
    rounds = await asyncio.gather(*(_draw(ctx, params, s, 0, first[s]) for s in slots))
    samples: list[tuple[float, Sample]] = [
        (params.temperatures[s], x) for s in slots for x in rounds[s].finished
    ]
    aborted = sum(len(r.aborted) for r in rounds)
    stop_reason = "budget" if any(r.stop_reason == "budget" for r in rounds) else "completed"

    candidates = await _candidates(ctx, samples, params)
    overall, table, agreement = _vote(candidates, params)
    exited = (
        stop_reason != "budget"
        and all(row["share"] >= params.intra_threshold for row in table.values())
        and agreement >= params.agreement_threshold
    )
    await ctx.report("round", round=1, agreement=agreement, early_exit=exited)

    rest = [params.quota(params.temperatures[s]) - first[s] for s in slots]
    if not exited and stop_reason != "budget" and any(rest):
        more = await asyncio.gather(*(_draw(ctx, params, s, first[s], rest[s]) for s in slots))
        samples += [(params.temperatures[s], x) for s in slots for x in more[s].finished]
        aborted += sum(len(r.aborted) for r in more)
        if any(r.stop_reason == "budget" for r in more):
            stop_reason = "budget"
        candidates = await _candidates(ctx, samples, params)
        overall, table, agreement = _vote(candidates, params)
    elif exited:
        stop_reason = "early_stop"

    chosen = pick_member(candidates, overall)
    ballots: dict[int, float] = {}
    for row in table.values():
        if row["winner"] is not None:
            ballots[row["winner"]] = ballots.get(row["winner"], 0.0) + 1.0
    votes = candidate_votes(candidates, ballots)
    explanation = (
        f"two-stage vote over {len(params.temperatures)} temperatures "
        f"({len(candidates)} samples); winners agree at {agreement:.2f}"
    )
    if stop_reason == "early_stop":
        explanation += "; early exit after the first round"
    return finish_result(
        ctx,
        "multi_temperature",
        candidates,
        chosen,
        votes=votes,
        stop_reason=stop_reason,
        explanation=explanation,
        details={
            "per_temperature": {
                str(t): {**row, "winner_answer": _spelling(candidates, row["winner"])}
                for t, row in table.items()
            },
            "agreement": agreement,
            "aborted_samples": aborted,
        },
    )


async def _candidates(
    ctx: StrategyContext, samples: list[tuple[float, Sample]], params: MultiTemperatureParams
) -> list[Candidate]:
    candidates = [to_candidate(s, params, temperature=t) for t, s in samples]
    await label_answers(ctx.verifiers.grader, candidates, params.answer)
    return candidates


def _spelling(candidates: list[Candidate], label: int | None) -> str | None:
    return class_spelling(
        [c.answer for c in candidates], [c.answer_class for c in candidates], label
    )


STRATEGY = Strategy("multi_temperature", MultiTemperatureParams, multi_temperature, __doc__)
