"""Self-consistency: N samples, answers grouped by math equivalence, plurality vote.

Variants: verifier-weighted (cluster score = sum of member scores) and pessimistic
verification (mean score - alpha * ln N / (n_a + 1)). Adaptive mode stops sampling once
the leader cannot be overtaken by the samples still to come, or once P(leader stays
leader) reaches `confidence`, and aborts the samples in flight. That probability is the
Beta posterior's (the leader's share beats the runner-up's) or, with
`stopping="predictive"`, its posterior predictive over the samples still to come (the
leader is still ahead once all n have voted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from pydantic import Field, model_validator

from ttscale.engine.types import Sample
from ttscale.verifiers.aggregate import pessimistic_vote, plurality, weighted_vote

from .base import (
    Candidate,
    StrategyContext,
    StrategyResult,
    finish_result,
    read_answer,
    to_candidate,
)
from .in_flight import FollowLoad, InFlight, describe_in_flight
from .params import StrategyParams, VerifierUse
from .registry import Strategy
from .scoring import score_outcomes
from .stopping import (
    beta_leader_probability,
    cannot_be_overtaken,
    leader_margin,
    predictive_leader_probability,
)
from .voting import candidate_votes, group_answers, label_answers, pick_member, vote_table

ADAPTIVE_PARALLEL = 1
"""Samples in flight in adaptive mode on a busy engine unless `parallel` says otherwise. A
sample still running when the vote is decided is work the stop rule cannot take back, so
the default draws one at a time, at the price of latency: a run that needs k samples
takes k sample-times (lab/studies/adaptive-samples-in-flight.md)."""

ADAPTIVE_IDLE_PARALLEL = 4
"""Most samples in flight in adaptive mode on an idle engine unless `parallel` says
otherwise: samples the vote surely needs (those before the first count at which a vote
could stop, and later those no answers of the ones in flight could make needless) run
together, up to four, which cuts an adaptive request's latency up to fourfold (a run
that stops after three unanimous samples takes one sample-time instead of three). A
sample the ones in flight could make needless waits for them (`hold_back`), so the
ceiling costs no tokens that drawing one at a time would not. Between busy and idle the
request takes what the other requests leave of the engine's fill (`FollowLoad`)."""


StopRule = Literal["beta", "predictive"]
STOP_RULES: tuple[str, ...] = get_args(StopRule)
DEFAULT_STOPPING: StopRule = "predictive"
"""The adaptive stop rule unless `stopping` says otherwise (see `stop_rule`): at the same
accuracy it saves more tokens than the Beta rule, replayed on GSM8K traces with `ttscale
bench replay --adaptive` (lab/studies/adaptive-stopping.md)."""


DEFAULT_CONFIDENCE = 0.925
"""The adaptive stop threshold unless `confidence` says otherwise, chosen by replaying
GSM8K traces (lab/studies/adaptive-stopping.md). The predictive rule's P takes few
values: 0.925 stops at three unanimous votes of 16 (P = 0.947), which 0.95 does not, and
not at 4 votes to 1 after 5 (P = 0.912), which 0.9 does."""

DEFAULT_MIN_SAMPLES = 3
"""Finished samples before the adaptive confidence rule may stop (a lead no remaining
samples can undo stops at any count)."""


class SelfConsistencyParams(StrategyParams):
    benchmark_baseline = True
    n: int = Field(8, ge=1, le=1024, description="samples to draw (at most)")
    weighting: Literal["none", "verifier", "pessimistic"] = "none"
    verifier: str | None = Field(None, description="outcome verifier for the weighted modes")
    alpha: float = Field(0.5, ge=0.0, description="pessimism of the pessimistic mode")
    adaptive: bool = False
    confidence: float = Field(
        DEFAULT_CONFIDENCE,
        gt=0.5,
        lt=1.0,
        description="adaptive: stop once P(leader stays leader) reaches it",
    )
    stopping: StopRule = Field(
        DEFAULT_STOPPING,
        description="adaptive: P(leader stays leader) with unlimited samples (beta) or "
        "once all n have voted (predictive)",
    )
    min_samples: int = Field(
        DEFAULT_MIN_SAMPLES, ge=1, description="samples before the confidence rule may stop"
    )
    parallel: int | None = Field(
        None,
        ge=1,
        description="samples in flight (default: n; adaptive: "
        f"{ADAPTIVE_PARALLEL} on a busy engine to {ADAPTIVE_IDLE_PARALLEL} on an idle one)",
    )
    hold_back: bool = Field(
        True,
        description="adaptive: start no sample while the samples in flight could settle the "
        "vote (false: keep `parallel` in flight, for latency, at the tokens of samples the "
        "stop aborts)",
    )

    @model_validator(mode="after")
    def _check(self) -> SelfConsistencyParams:
        if self.weighting != "none" and self.verifier is None:
            raise ValueError(f"weighting={self.weighting!r} needs a verifier")
        if self.adaptive and self.weighting != "none":
            raise ValueError("adaptive stopping counts votes: use it with weighting='none'")
        return self

    def in_flight(self) -> InFlight:
        """Samples drawn at once: all n, or when stopping adaptively as few as the
        engine's load asks for."""
        if self.parallel is not None:
            return min(self.parallel, self.n)
        if not self.adaptive:
            return self.n
        return FollowLoad(min(ADAPTIVE_PARALLEL, self.n), min(ADAPTIVE_IDLE_PARALLEL, self.n))

    def in_flight_when_busy(self) -> int:
        """`in_flight()` while other requests keep the engine busy (what replays model)."""
        limit = self.in_flight()
        return limit.floor if isinstance(limit, FollowLoad) else limit

    def verifiers_used(self) -> list[VerifierUse]:
        if self.weighting == "none" or self.verifier is None:
            return []
        return [VerifierUse("verifier", self.verifier, "outcome")]

    def samples_requested(self) -> int:
        return self.n

    def draws_independent_samples(self) -> bool:
        return not self.adaptive


async def self_consistency(ctx: StrategyContext, params: SelfConsistencyParams) -> StrategyResult:
    watch = _VoteWatch(ctx, params)
    watching = params.adaptive or ctx.progress is not None  # else votes are counted once
    outcome = await ctx.sample(
        params.sampling,
        params.n,
        parallel=params.in_flight(),
        on_sample=watch.on_sample if watching else None,
        hold=watch.hold if params.adaptive and params.hold_back else None,
    )
    candidates = [to_candidate(s, params) for s in outcome.finished]
    labels = await label_answers(ctx.verifiers.grader, candidates, params.answer)
    winner, totals, explanation = await _vote(ctx, params, candidates, labels)
    if watch.stopped_by is not None:
        explanation += f"; stopped early: {watch.stopped_by}"
    scored = params.verifier if params.weighting != "none" else None
    chosen = pick_member(
        candidates, winner, (lambda i: candidates[i].scores.get(scored, 0.0)) if scored else None
    )
    return finish_result(
        ctx,
        "self_consistency",
        candidates,
        chosen,
        votes=candidate_votes(candidates, totals),
        stop_reason=outcome.stop_reason,
        explanation=explanation,
        details={
            "aborted_samples": len(outcome.aborted),
            "in_flight_limit": describe_in_flight(params.in_flight()),
            "most_in_flight": outcome.most_in_flight,
        },
    )


@dataclass
class _VoteWatch:
    """The votes of one run as its samples finish: streamed to the client and, in
    adaptive mode, asked whether to stop (`on_sample`) and whether the samples in flight
    could settle the vote before another starts (`hold`)."""

    ctx: StrategyContext
    params: SelfConsistencyParams
    answers: dict[int, str | None] = field(default_factory=dict)
    votes: dict[int, float] = field(default_factory=dict)
    stopped_by: str | None = None
    """The rule that stopped the run, if one did."""

    async def on_sample(self, sample: Sample) -> bool:
        answer, _ = read_answer(sample.answer_text, sample.reasoning, self.params)
        self.answers[sample.index] = answer
        ordered = [self.answers[i] for i in sorted(self.answers)]
        labels = await group_answers(self.ctx.verifiers.grader, ordered, self.params.answer)
        _, self.votes = plurality(labels)
        await self.ctx.report("votes", votes=vote_table(ordered, labels, self.votes))
        if not self.params.adaptive:
            return False
        rule = stop_rule(self.votes, self.params, len(self.answers))
        if self.stopped_by is None:  # of samples finishing together, the first to stop
            self.stopped_by = rule
        return rule is not None

    def hold(self, in_flight: int) -> bool:
        return could_stop_with(self.votes, self.params, len(self.answers), in_flight)


def stop_rule(votes: dict[int, float], params: SelfConsistencyParams, seen: int) -> str | None:
    """Why adaptive sampling may stop now, or None to go on. `seen` counts the finished
    samples; the rest of n (in flight or not started) are the votes still to come."""
    remaining = params.n - seen
    if remaining == 0:  # every sample is in: the run is complete, not stopped early
        return None
    if cannot_be_overtaken(votes, remaining):
        return f"leader cannot be overtaken by the {remaining} remaining samples"
    if seen < params.min_samples:
        return None
    leader, runner_up = (int(v) for v in leader_margin(votes))
    if params.stopping == "predictive":
        probability = predictive_leader_probability(leader, runner_up, remaining)
        rule = f"P(leader stays leader of all {params.n})"
    else:
        probability = beta_leader_probability(leader, runner_up)
        rule = "P(leader stays leader)"
    if probability >= params.confidence:
        return f"{rule} = {probability:.3f} >= {params.confidence}"
    return None


def could_stop_with(
    votes: dict[int, float], params: SelfConsistencyParams, seen: int, in_flight: int
) -> bool:
    """Whether the `in_flight` samples could, by their answers, stop the run: then another
    sample started now is drawn only to be aborted if they do, and it waits for them.

    Holding back only samples the run might not need keeps the token cost of drawing one
    at a time (a vote stop then finds nothing in flight to abort) while the samples that
    are surely needed run together (at the start, those before the first count at which
    a vote could stop: three by default). The samples' best case for stopping is each voting
    for the leader (for a first answer if there is none yet), checked after each of them;
    for n = 8 and 16 at thresholds 0.9 to 0.95, no order of other answers, new answers or
    none stops where that best case does not (tests)."""
    leader = max(votes, key=votes.__getitem__, default=0)
    for k in range(1, in_flight + 1):
        best = {**votes, leader: votes.get(leader, 0.0) + k}
        if stop_rule(best, params, seen + k) is not None:
            return True
    return False


async def _vote(
    ctx: StrategyContext,
    params: SelfConsistencyParams,
    candidates: list[Candidate],
    labels: list[int | None],
) -> tuple[int | None, dict[int, float], str]:
    """(winning class, class totals, explanation) under the chosen weighting."""
    explanation = f"plurality vote over {len(candidates)} samples"
    if params.weighting == "none":
        return (*plurality(labels), explanation)
    name = params.verifier
    scores = await score_outcomes(ctx, name, [c.answer_text for c in candidates])
    if scores is None:
        return (*plurality(labels), explanation + " (verifier budget exhausted: unweighted)")
    for candidate, score in zip(candidates, scores, strict=True):
        candidate.scores[name] = score
    if params.weighting == "verifier":
        explanation = f"verifier-weighted vote ({name}) over {len(candidates)}"
        return (*weighted_vote(labels, scores), explanation)
    explanation = f"pessimistic vote ({name}, alpha={params.alpha}) over {len(candidates)} samples"
    return (*pessimistic_vote(labels, scores, params.alpha), explanation)


STRATEGY = Strategy("self_consistency", SelfConsistencyParams, self_consistency, __doc__)
