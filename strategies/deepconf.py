"""DeepConf, online mode (Deep Think with Confidence, arXiv 2508.15260).

Token confidence C_i = -mean of the top-k log-probabilities at position i; group
confidence = mean of C over a sliding window of the last W tokens; a trace's confidence is
its lowest group confidence (`ttscale.engine.confidence`). Warm-up traces run to full
length and set the stopping threshold s from their confidences: DeepConf-low keeps the
top 10% (s = 90th percentile of the warm-up confidences), DeepConf-high the top 90%
(s = 10th percentile). Later traces (up to n in all) are aborted in the engine as soon
as a window's confidence falls below s; they are billed and do not vote. The run stops
early once the vote is decided (P(leader stays leader) under a Beta posterior, the rule of
adaptive self-consistency, reaches `consensus`). The answer is a vote over the retained
traces (those that finished with confidence >= s: for the warm-ups, their top 10% or 90%
by construction), each weighted by its confidence, as in the paper's reference code.

Defaults for small models: the paper's W=2048 and k=20 suit 10k-60k-token traces of large
reasoning models, where one window is a few percent of a trace; for 256-512-token answers
W=64 keeps a window to a sentence or two of reasoning (12-25% of a trace), long enough to
average out single uncertain tokens, short enough that most of a trace lies after the first
check. k stays 20: the confidence is relative (s comes from the same model on the same
question), and asking for 20 rather than 5 costs about as much throughput, a few percent
(lab/studies/logprob-cost.md).
Four warm-up traces (the paper: 16 of 512) leave most of a small n to the stopped phase.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, model_validator

from ttscale.engine.confidence import LOW_CONFIDENCE, confidence_drops, lowest_group_confidence
from ttscale.engine.types import ConfidenceStop, Sample
from ttscale.verifiers.aggregate import plurality, weighted_vote

from .base import (
    StrategyContext,
    StrategyResult,
    finish_result,
    read_answer,
    to_candidate,
)
from .params import StrategyParams
from .registry import Strategy
from .sampling import SamplingOutcome, StopReason
from .stopping import beta_leader_probability, leader_margin
from .voting import group_answers, label_answers, pick_member, vote_table

KEPT_PERCENT = {"low": 10, "high": 90}
"""Share of the warm-up traces each variant keeps above its threshold."""
DEFAULT_WARMUP = 4


class DeepConfParams(StrategyParams):
    n: int = Field(16, ge=1, le=1024, description="traces in all, warm-up included (at most)")
    warmup: int | None = Field(
        None, ge=1, description=f"warm-up traces that set the threshold [min({DEFAULT_WARMUP}, n)]"
    )
    variant: Literal["low", "high"] = Field(
        "high", description="low: keep the top 10% (threshold = 90th percentile), high: 90%"
    )
    window: int = Field(64, ge=1, le=65536, description="tokens per group (sliding window)")
    top_k: int = Field(20, ge=1, le=20, description="k of the token confidence")
    consensus: float | None = Field(
        0.95, gt=0.5, lt=1.0, description="stop once P(leader stays leader) >= this; null: never"
    )
    parallel: int | None = Field(
        None,
        ge=1,
        description="traces in flight after the warm-up [the warm-up's size; no consensus: all]",
    )

    @model_validator(mode="after")
    def _warmup_within_n(self) -> DeepConfParams:
        if self.warmup is not None and self.warmup > self.n:
            raise ValueError("warmup must not exceed n")
        return self

    @property
    def warmup_traces(self) -> int:
        return self.warmup if self.warmup is not None else min(DEFAULT_WARMUP, self.n)

    def in_flight(self) -> int:
        """Traces in flight after the warm-up. While the consensus rule may stop the run,
        a few at a time (refilled as each finishes), so that a decided vote has traces
        left to save; with all in flight they would be nearly done when it is decided."""
        rest = self.n - self.warmup_traces
        default = rest if self.consensus is None else self.warmup_traces
        return max(1, min(self.parallel or default, rest))

    def samples_at_once(self) -> int:
        """The warm-up runs together, then `in_flight()` of the other traces."""
        return max(self.warmup_traces, self.in_flight())

    def samples_requested(self) -> int:
        return self.n


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), interpolating linearly between the closest ranks
    (numpy's default, which the paper's code uses)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def warmup_threshold(confidences: Sequence[float], variant: Literal["low", "high"]) -> float:
    """s: the confidence above which the variant's share of the warm-up traces lies."""
    return percentile(confidences, 100 - KEPT_PERCENT[variant])


@dataclass
class Trace:
    """One finished sample with its DeepConf confidence (its lowest group confidence)."""

    sample: Sample
    phase: Literal["warmup", "final"]
    confidence: float | None
    drops: list[tuple[int, float]] = field(default_factory=list)
    """Where its lowest full-window confidence fell (`confidence_drops`): what an offline
    replay needs to know where the watch would have stopped it at any threshold."""

    @classmethod
    def of(cls, sample: Sample, phase: Literal["warmup", "final"], window: int) -> Trace:
        confidences = sample.thinking(sample.token_confidences) or []  # the thinking trace
        return cls(
            sample,
            phase,
            lowest_group_confidence(confidences, window),
            confidence_drops(confidences, window),
        )

    @property
    def stopped_early(self) -> bool:
        """Aborted in the engine because a window fell below the threshold."""
        return self.sample.finish_reason == "abort" and self.sample.stop_reason == LOW_CONFIDENCE

    def retained(self, threshold: float | None) -> bool:
        """Finished (not stopped) with a confidence at or above the threshold."""
        return (
            threshold is not None
            and self.sample.finish_reason != "abort"
            and self.confidence is not None
            and self.confidence >= threshold
        )


def consensus_rule(labels: Sequence[int | None], consensus: float | None) -> str | None:
    """Why the retained traces' vote (`labels`) is decided, or None: the leader stays
    leader with posterior probability >= `consensus` (never, for None). Counts, not
    confidences: the weights decide the winner, the number of agreeing traces the stop."""
    if consensus is None:
        return None
    _, counts = plurality(labels)
    leader, runner_up = leader_margin(counts)
    probability = beta_leader_probability(int(leader), int(runner_up))
    if probability < consensus:
        return None
    return f"P(leader stays leader) = {probability:.3f} >= {consensus}"


@dataclass
class _Consensus:
    """The retained traces' vote as traces finish: streams it and says when it is decided."""

    ctx: StrategyContext
    params: DeepConfParams
    threshold: float | None
    answers: list[str | None] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    rule: str | None = None

    async def add(self, trace: Trace) -> bool:
        """Count one finished trace; True when the vote is decided (stop sampling)."""
        if trace.stopped_early:
            await self.ctx.report(
                "low_confidence", index=trace.sample.index, tokens=trace.sample.num_tokens
            )
        if not trace.retained(self.threshold):
            return False
        sample = trace.sample
        self.answers.append(read_answer(sample.answer_text, sample.reasoning, self.params)[0])
        self.weights.append(trace.confidence or 0.0)
        if self.params.consensus is None and self.ctx.progress is None:
            return False  # nobody looks at the running vote: grouping can wait
        labels = await group_answers(self.ctx.verifiers.grader, self.answers, self.params.answer)
        _, totals = weighted_vote(labels, self.weights)
        await self.ctx.report("votes", votes=vote_table(self.answers, labels, totals))
        return self._decided(labels)

    def _decided(self, labels: list[int | None]) -> bool:
        self.rule = consensus_rule(labels, self.params.consensus)
        return self.rule is not None

    async def on_sample(self, sample: Sample) -> bool:
        return await self.add(Trace.of(sample, "final", self.params.window))


async def deepconf(ctx: StrategyContext, params: DeepConfParams) -> StrategyResult:
    spec = params.sampling.replace(logprobs=params.top_k, confidence_stop=None)
    warm = await ctx.sample(spec, params.warmup_traces)
    traces = [Trace.of(s, "warmup", params.window) for s in warm.finished]
    minima = [t.confidence for t in traces if t.confidence is not None]
    threshold = warmup_threshold(minima, params.variant) if minima else None
    await ctx.report("threshold", threshold=threshold, warmup_minima=minima)
    consensus = _Consensus(ctx, params, threshold)
    # a vote decided by the warm-up saves the other traces (if there are any)
    decided = any([await consensus.add(trace) for trace in traces])
    decided = decided and params.n > params.warmup_traces
    later = SamplingOutcome()
    if threshold is not None and warm.stop_reason == "completed" and not decided:
        stop = ConfidenceStop(window=params.window, threshold=threshold)
        later = await ctx.sample(
            spec.replace(confidence_stop=stop),
            params.n - params.warmup_traces,
            parallel=params.in_flight(),
            first_index=params.warmup_traces,
            on_sample=consensus.on_sample,
        )
        traces += [Trace.of(s, "final", params.window) for s in later.finished]
    outcome = _Outcome(
        params,
        sorted(traces, key=lambda t: t.sample.index),
        threshold,
        cancelled=[*warm.aborted, *later.aborted],
        stop_reason=_stop_reason(warm, later, decided),
        rule=consensus.rule if decided or later.stop_reason == "early_stop" else None,
    )
    return await outcome.result(ctx)


def _stop_reason(warm: SamplingOutcome, later: SamplingOutcome, decided: bool) -> StopReason:
    if decided or later.stop_reason == "early_stop":
        return "early_stop"
    if "budget" in (warm.stop_reason, later.stop_reason):
        return "budget"
    return "completed"


@dataclass
class _Outcome:
    """Every trace of a run, and how the run ended: the vote, the pick and the evidence."""

    params: DeepConfParams
    traces: list[Trace]
    threshold: float | None
    cancelled: list[Sample]
    """Aborted by the consensus stop or the budget (not by their confidence)."""
    stop_reason: StopReason
    rule: str | None

    @property
    def kept(self) -> list[int]:
        """Positions of the retained traces: the ones that vote."""
        return [i for i, t in enumerate(self.traces) if t.retained(self.threshold)]

    async def result(self, ctx: StrategyContext) -> StrategyResult:
        """Vote over the retained traces weighted by confidence; pick the most confident
        member of the winning class (with no answer to vote on, the most confident
        retained trace, so the reply still has a text)."""
        candidates = [to_candidate(t.sample, self.params) for t in self.traces]
        for candidate, trace in zip(candidates, self.traces, strict=True):
            if trace.confidence is not None:
                candidate.scores["confidence"] = trace.confidence
            if trace.drops:  # flattened (tokens, lowest) pairs: scores hold flat lists
                candidate.scores["confidence_drops"] = [float(x) for d in trace.drops for x in d]
        await label_answers(ctx.verifiers.grader, candidates, self.params.answer)
        kept = self.kept
        labels = [candidates[i].answer_class for i in kept]
        winner, totals = weighted_vote(labels, [self._weight(i) for i in kept])
        chosen = pick_member(candidates, winner, self._weight)
        if chosen is None and kept:
            chosen = max(kept, key=lambda i: (self._weight(i), -i))
        return finish_result(
            ctx,
            "deepconf",
            candidates,
            chosen,
            votes=vote_table([candidates[i].answer for i in kept], labels, totals),
            stop_reason=self.stop_reason,
            explanation=self._explain(voted=winner is not None),
            details=self._details(),
        )

    def _weight(self, position: int) -> float:
        """A retained trace's vote weight is its confidence; other traces never win."""
        trace = self.traces[position]
        if not trace.retained(self.threshold) or trace.confidence is None:
            return -math.inf
        return trace.confidence

    def _explain(self, *, voted: bool) -> str:
        if self.threshold is None:
            return "no warm-up trace finished: no threshold, no vote"
        params = self.params
        text = (
            f"confidence-weighted vote over {len(self.kept)} of {len(self.traces)} traces "
            f"(DeepConf-{params.variant}: lowest {params.window}-token group confidence >= "
            f"{self.threshold:.4f}, the {100 - KEPT_PERCENT[params.variant]}th percentile of "
            f"{sum(t.phase == 'warmup' for t in self.traces)} warm-up traces); "
            f"{sum(t.stopped_early for t in self.traces)} stopped early in the engine"
        )
        if not voted:
            text += "; no retained trace has an answer: the most confident one is returned"
        if self.rule:
            text += f"; stopped early: {self.rule}"
        return text

    def _details(self) -> dict[str, Any]:
        """The evidence: warm-up minima, threshold, every trace's confidence and fate, and
        the tokens saved against running all n traces to full length (a full length is
        estimated as the mean length of the traces that finished)."""
        params, traces = self.params, self.traces
        finished = [t.sample.num_tokens for t in traces if t.sample.finish_reason != "abort"]
        full = sum(finished) / len(finished) if finished else float(params.sampling.max_tokens)
        stopped = [t.sample for t in traces if t.stopped_early]
        never_started = max(0, params.n - len(traces) - len(self.cancelled))
        cut_short = [*stopped, *self.cancelled]
        saved = sum(max(0.0, full - s.num_tokens) for s in cut_short) + never_started * full
        return {
            "variant": params.variant,
            "window": params.window,
            "top_k": params.top_k,
            "trace_confidence": "lowest group confidence, also the vote weight",
            "warmup_minima": [t.confidence for t in traces if t.phase == "warmup"],
            "threshold": self.threshold,
            "traces": [self._row(t) for t in traces],
            "retained": [traces[i].sample.index for i in self.kept],
            "stopped_early": [{"index": s.index, "tokens": s.num_tokens} for s in stopped],
            "cancelled": [{"index": s.index, "tokens": s.num_tokens} for s in self.cancelled],
            "never_started": never_started,
            "full_trace_tokens_estimate": round(full, 2),
            "tokens_saved_estimate": round(saved, 2),
            "consensus_rule": self.rule,
        }

    def _row(self, trace: Trace) -> dict[str, Any]:
        return {
            "index": trace.sample.index,
            "phase": trace.phase,
            "tokens": trace.sample.num_tokens,
            "confidence": trace.confidence,
            "finish_reason": trace.sample.finish_reason,
            "stopped_early": trace.stopped_early,
            "retained": trace.retained(self.threshold),
        }


STRATEGY = Strategy("deepconf", DeepConfParams, deepconf, __doc__)
