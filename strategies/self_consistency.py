"""Self-consistency: N samples, answers grouped by math equivalence, plurality vote.

Variants: verifier-weighted (cluster score = sum of member scores) and pessimistic
verification (mean score - alpha * ln N / (n_a + 1)). Adaptive mode stops sampling once
the leader cannot be overtaken by the samples still to come, or once the Beta posterior
P(leader stays leader) reaches `confidence`, and aborts the samples in flight.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.engine.types import Sample
from verifiers.aggregate import pessimistic_vote, plurality, weighted_vote
from verifiers.extraction import extract_answer

from .base import (
    SamplingParams,
    StrategyContext,
    StrategyResult,
    finish_result,
    to_candidate,
    vote_table,
)
from .registry import Strategy
from .scoring import score_outcomes
from .stopping import beta_leader_probability, cannot_be_overtaken, leader_margin


class SelfConsistencyParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(8, ge=1, le=1024, description="samples to draw (at most)")
    sampling: SamplingParams = SamplingParams()
    weighting: Literal["none", "verifier", "pessimistic"] = "none"
    verifier: str | None = Field(None, description="outcome verifier for the weighted modes")
    alpha: float = Field(0.5, ge=0.0, description="pessimism of the pessimistic mode")
    adaptive: bool = False
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="Beta stopping threshold")
    min_samples: int = Field(3, ge=1, description="samples before the Beta rule may stop")
    parallel: int | None = Field(None, ge=1, description="samples in flight (default: n)")

    @model_validator(mode="after")
    def _check(self) -> SelfConsistencyParams:
        if self.weighting != "none" and self.verifier is None:
            raise ValueError(f"weighting={self.weighting!r} needs a verifier")
        if self.adaptive and self.weighting != "none":
            raise ValueError("adaptive stopping counts votes: use it with weighting='none'")
        return self


async def run(ctx: StrategyContext, params: SelfConsistencyParams) -> StrategyResult:
    grader = ctx.verifiers.grader
    answers: dict[int, str | None] = {}
    stop_rule: list[str] = []

    async def on_sample(sample: Sample) -> bool:
        answers[sample.index] = extract_answer(sample.text)
        order = sorted(answers)
        labels = await grader.group([answers[i] for i in order])
        _, votes = plurality(labels)
        await ctx.report("votes", votes=vote_table_of(answers, order, labels, votes))
        if not params.adaptive:
            return False
        remaining = params.n - len(answers)
        if cannot_be_overtaken(votes, remaining):
            stop_rule.append(f"leader cannot be overtaken by the {remaining} remaining samples")
            return True
        leader, runner_up = leader_margin(votes)
        probability = beta_leader_probability(int(leader), int(runner_up))
        if len(answers) >= params.min_samples and probability >= params.confidence:
            stop_rule.append(f"P(leader stays leader) = {probability:.3f} >= {params.confidence}")
            return True
        return False

    spec = params.sampling.spec()
    outcome = await ctx.sample(spec, params.n, parallel=params.parallel, on_sample=on_sample)
    samples = outcome.finished
    candidates = [to_candidate(s) for s in samples]
    labels = await grader.group([c.answer for c in candidates])
    for candidate, label in zip(candidates, labels, strict=True):
        candidate.answer_class = label

    explanation = f"plurality vote over {len(samples)} samples"
    if params.weighting == "none":
        winner, totals = plurality(labels)
    else:
        scores = await score_outcomes(ctx, params.verifier, [c.text for c in candidates])
        if scores is None:
            winner, totals = plurality(labels)
            explanation += " (verifier budget exhausted: unweighted)"
        else:
            for candidate, score in zip(candidates, scores, strict=True):
                candidate.scores[params.verifier] = score
            if params.weighting == "verifier":
                winner, totals = weighted_vote(labels, scores)
                explanation = f"verifier-weighted vote ({params.verifier}) over {len(samples)}"
            else:
                winner, totals = pessimistic_vote(labels, scores, params.alpha)
                explanation = (
                    f"pessimistic vote ({params.verifier}, alpha={params.alpha}) "
                    f"over {len(samples)} samples"
                )
    if stop_rule:
        explanation += f"; stopped early: {stop_rule[0]}"

    chosen = _representative(candidates, winner, params.verifier)
    return finish_result(
        ctx,
        "self_consistency",
        candidates,
        chosen,
        votes=vote_table(candidates, totals),
        stop_reason=outcome.stop_reason,
        explanation=explanation,
        details={"aborted_samples": len(outcome.aborted)},
    )


def vote_table_of(answers, order, labels, votes) -> dict[str, float]:
    """Votes so far keyed by the first spelling of each answer class."""
    spelling: dict[int, str] = {}
    for position, label in zip(order, labels, strict=True):
        if label is not None:
            spelling.setdefault(label, answers[position])
    return {spelling[label]: count for label, count in votes.items()}


def _representative(candidates, winner: int | None, verifier: str | None) -> int | None:
    """The winning class's best-scored member (first one when unscored)."""
    members = [i for i, c in enumerate(candidates) if c.answer_class == winner]
    if winner is None or not members:
        return None
    if verifier is None:
        return members[0]
    return max(members, key=lambda i: (candidates[i].scores.get(verifier, 0.0), -i))


STRATEGY = Strategy("self_consistency", SelfConsistencyParams, run, __doc__)
