"""Best-of-N: N samples, each scored by a verifier, the highest score wins.

An outcome verifier (ORM or judge) scores whole solutions; a process verifier (PRM or
judge per step) scores steps, aggregated by min/last/prod/mean [min]. With no verifier
configured, the sample with the highest mean token log-probability wins, and the result
says so.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ttscale.verifiers.aggregate import PRMAggregation, aggregate_steps, argmax_first

from .base import (
    StrategyContext,
    StrategyResult,
    finish_result,
    to_candidate,
)
from .params import StrategyParams, VerifierUse
from .registry import Strategy
from .scoring import score_outcomes, score_steps
from .steps import split_steps


class BestOfNParams(StrategyParams):
    n: int = Field(8, ge=1, le=1024)
    verifier: str | None = Field(None, description="verifier name; none: mean logprob")
    verifier_kind: Literal["outcome", "process"] | None = Field(
        None, description="outcome (ORM, judge) or process (PRM); none: outcome if it is one"
    )
    aggregation: PRMAggregation = "min"
    parallel: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> BestOfNParams:
        if self.verifier is None and self.verifier_kind == "process":
            raise ValueError("verifier_kind='process' needs a verifier")
        return self

    def verifiers_used(self) -> list[VerifierUse]:
        if self.verifier is None:
            return []
        return [VerifierUse("verifier", self.verifier, self.verifier_kind)]

    def samples_requested(self) -> int:
        return self.n

    def draws_independent_samples(self) -> bool:
        return True


async def best_of_n(ctx: StrategyContext, params: BestOfNParams) -> StrategyResult:
    # the sampled token's logprob (logprobs=0) is the no-verifier fallback score
    spec = params.sampling.replace(logprobs=params.sampling.logprobs or 0)
    outcome = await ctx.sample(spec, params.n, parallel=params.parallel)
    candidates = [to_candidate(s, params) for s in outcome.finished]
    texts = [c.answer_text for c in candidates]

    scores: list[float] | None = None
    name = params.verifier
    kind = params.verifier_kind or ("outcome" if name in ctx.verifiers.outcome else "process")
    if name is not None and kind == "outcome":
        scores = await score_outcomes(ctx, name, texts)
        if scores is not None:
            for candidate, score in zip(candidates, scores, strict=True):
                candidate.scores[name] = score
    elif name is not None:
        step_scores = await score_steps(ctx, name, [split_steps(t) for t in texts])
        if step_scores is not None:
            scores = [aggregate_steps(s, params.aggregation) for s in step_scores]
            for candidate, steps, score in zip(candidates, step_scores, scores, strict=True):
                candidate.scores[f"{name}_steps"] = steps
                candidate.scores[name] = score

    if scores is not None:
        how = f" ({params.aggregation} over steps)" if kind == "process" else ""
        explanation = f"highest {name} score{how} of {len(candidates)} samples"
    else:
        scores = [_or_minus_inf(c.mean_logprob) for c in candidates]
        reason = "no verifier configured" if name is None else "verifier budget exhausted"
        explanation = f"highest mean token log-probability of {len(candidates)} samples ({reason})"
        for candidate in candidates:
            if candidate.mean_logprob is not None:  # JSON has no -inf
                candidate.scores["mean_logprob"] = candidate.mean_logprob

    best = argmax_first(scores)
    return finish_result(
        ctx,
        "best_of_n",
        candidates,
        best,
        stop_reason=outcome.stop_reason,
        explanation=explanation,
        details={"aborted_samples": len(outcome.aborted)},
    )


def _or_minus_inf(value: float | None) -> float:
    return float("-inf") if value is None else value


STRATEGY = Strategy("best_of_n", BestOfNParams, best_of_n, __doc__)
