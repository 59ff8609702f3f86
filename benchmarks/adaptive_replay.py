"""Replay of adaptive self-consistency schedules on recorded samples.

Which schedule saves tokens depends on when samples finish, so each recorded pool (N
independent samples of one problem) is replayed as an event simulation: samples start
in a random order, at most `parallel` at a time, each decodes one token per time unit
and finishes after its recorded length; whenever one finishes, the strategy's own stop
rule (`stop_rule` of `strategies/self_consistency.py`) looks at the finished votes. On
a stop the samples in flight are aborted and billed the tokens they had made, as the
live strategy bills them. Equal per-sample decode speed is the one simplification: a
batch slows every member alike, so the finishing order and the aborted share hold.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ttscale.strategies.self_consistency import (
    DEFAULT_MIN_SAMPLES,
    DEFAULT_STOPPING,
    SelfConsistencyParams,
    StopRule,
    stop_rule,
)
from ttscale.verifiers.aggregate import plurality, weighted_vote

from .datasets import BenchError
from .records import Record, SampleTrace
from .stats import Interval, bootstrap_ci, paired_difference


@dataclass(frozen=True)
class Schedule:
    """How adaptive self-consistency is run: samples in flight, the stop rule and its
    threshold (`SelfConsistencyParams`)."""

    parallel: int
    confidence: float
    min_samples: int = DEFAULT_MIN_SAMPLES
    stopping: StopRule = DEFAULT_STOPPING

    @property
    def label(self) -> str:
        label = f"{self.stopping} parallel={self.parallel} confidence={self.confidence}"
        if self.min_samples != DEFAULT_MIN_SAMPLES:
            label += f" min_samples={self.min_samples}"
        return label


@dataclass(frozen=True)
class ScheduleResult:
    schedule: Schedule | None
    """None: the fixed-N baseline (every sample, no stopping)."""
    n: int
    problems: int
    accuracy: Interval
    accuracy_change: Interval
    """Paired difference against the fixed-N baseline over the same problems."""
    tokens: float
    """Mean generated tokens per problem, aborted partial samples included."""
    token_saving: float
    """1 - tokens / baseline tokens."""


def credit(
    labels: Sequence[int | None], right: set[int], weights: Sequence[float] | None = None
) -> float:
    """Expected credit of a plurality vote (or, with `weights`, a weighted vote) with
    ties broken at random; no vote at all earns nothing."""
    _, votes = plurality(labels) if weights is None else weighted_vote(labels, weights)
    if not votes:
        return 0.0
    best = max(votes.values())
    leaders = [label for label, count in votes.items() if count == best]
    return sum(label in right for label in leaders) / len(leaders)


def simulate(
    pool: Sequence[SampleTrace], order: Sequence[int], schedule: Schedule
) -> tuple[float, float]:
    """(credit, generated tokens) of one adaptive run drawing `pool` in `order`."""
    params = SelfConsistencyParams(
        n=len(order),
        adaptive=True,
        parallel=schedule.parallel,
        confidence=schedule.confidence,
        min_samples=schedule.min_samples,
        stopping=schedule.stopping,
    )
    right = {s.answer_class for s in pool if s.correct and s.answer_class is not None}
    running: list[tuple[int, int, int]] = []  # (finish time, draw number, start time)
    started = 0

    def start(now: int) -> None:
        nonlocal started
        while started < len(order) and len(running) < schedule.parallel:
            heapq.heappush(running, (now + pool[order[started]].tokens, started, now))
            started += 1

    start(0)
    finished: list[int] = []
    while running:
        now, number, _ = heapq.heappop(running)
        finished.append(number)
        labels = [pool[order[i]].answer_class for i in sorted(finished)]
        if stop_rule(plurality(labels)[1], params, len(finished)) is not None:
            partial = sum(now - begun for _, _, begun in running)
            tokens = sum(pool[order[i]].tokens for i in finished) + partial
            return credit(labels, right), float(tokens)
        start(now)
    labels = [pool[order[i]].answer_class for i in sorted(finished)]
    return credit(labels, right), float(sum(s.tokens for s in pool))


def replay_schedules(
    records: Sequence[Record],
    schedules: Sequence[Schedule],
    *,
    pool: str,
    draws: int = 200,
    seed: int = 0,
) -> list[ScheduleResult]:
    """The fixed-N baseline and each schedule on the pool setting's recorded samples,
    averaged over `draws` random drawing orders per problem."""
    pools = [r.samples for r in records if r.setting == pool and r.samples]
    if not pools:
        raise BenchError(f"no records of setting {pool!r} to replay")
    n = min(len(p) for p in pools)
    pools = [p[:n] for p in pools]
    rng = np.random.default_rng(seed)
    orders = [[rng.permutation(n) for _ in range(draws)] for _ in pools]
    fixed = [float(np.mean([credit([p[i].answer_class for i in o], right_classes(p)) for o in os]))
             for p, os in zip(pools, orders, strict=True)]  # fmt: skip
    fixed_tokens = float(np.mean([sum(s.tokens for s in p) for p in pools]))
    results = [_result(None, n, fixed, fixed, [fixed_tokens], fixed_tokens, seed)]
    for schedule in schedules:
        credits, tokens = [], []
        for p, os in zip(pools, orders, strict=True):
            runs = np.array([simulate(p, o, schedule) for o in os])
            credits.append(float(runs[:, 0].mean()))
            tokens.append(float(runs[:, 1].mean()))
        results.append(_result(schedule, n, credits, fixed, tokens, fixed_tokens, seed))
    return results


def abstain_truncated(records: Sequence[Record]) -> list[Record]:
    """The records with every sample cut off at `max_tokens` (finish reason "length")
    voting for nothing: a what-if for a grader that does not read an answer into a
    solution that never finished. Records do not say where an answer was found, so a
    box written before the cut-off abstains too."""

    def abstained(sample: SampleTrace) -> SampleTrace:
        if sample.finish_reason != "length":
            return sample
        return sample.model_copy(update={"answer": None, "answer_class": None, "correct": False})

    return [r.model_copy(update={"samples": [abstained(s) for s in r.samples]}) for r in records]


def right_classes(pool: Sequence[SampleTrace]) -> set[int]:
    return {s.answer_class for s in pool if s.correct and s.answer_class is not None}


def _result(
    schedule: Schedule | None,
    n: int,
    credits: list[float],
    fixed: list[float],
    tokens: list[float],
    fixed_tokens: float,
    seed: int,
) -> ScheduleResult:
    mean_tokens = float(np.mean(tokens))
    return ScheduleResult(
        schedule=schedule,
        n=n,
        problems=len(credits),
        accuracy=bootstrap_ci(credits, seed=seed),
        accuracy_change=paired_difference(credits, fixed, seed=seed),
        tokens=mean_tokens,
        token_saving=1.0 - mean_tokens / fixed_tokens if fixed_tokens else 0.0,
    )


def format_table(results: Sequence[ScheduleResult]) -> str:
    """A Markdown table, one row per schedule, the fixed-N baseline first."""
    lines = [
        "| schedule | accuracy [95% CI] | change vs fixed N [95% CI] | tokens/problem | saved |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        label = f"fixed N={r.n}" if r.schedule is None else f"adaptive {r.schedule.label}"
        lines.append(
            f"| {label} | {r.accuracy.format()} | {r.accuracy_change.format()} | "
            f"{r.tokens:.0f} | {r.token_saving:.1%} |"
        )
    return "\n".join(lines)
