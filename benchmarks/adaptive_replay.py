"""Replay of adaptive self-consistency schedules on recorded samples.

Which schedule saves tokens depends on when samples finish, so each recorded pool (N
independent samples of one problem) is replayed as an event simulation: samples start
in a random order, at most `parallel` at a time, each decodes one token per time unit
and finishes after its recorded length; whenever one finishes, the strategy's own stop
rule (`stop_rule` of `strategies/self_consistency.py`) looks at the finished votes. A
schedule that holds back starts no sample while the ones in flight could settle the vote
(`could_stop_with`, as the live strategy's `hold_back` does). On
a stop the samples in flight are aborted and billed the tokens they had made, as the
live strategy bills them. Equal per-sample decode speed is the one simplification: a
batch slows every member alike, so the finishing order and the aborted share hold.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ttscale.strategies.self_consistency import (
    DEFAULT_MIN_SAMPLES,
    DEFAULT_STOPPING,
    SelfConsistencyParams,
    StopRule,
    could_stop_with,
    stop_rule,
)
from ttscale.verifiers.aggregate import plurality, weighted_vote

from .datasets import BenchError
from .records import Record, SampleTrace
from .stats import Interval, bootstrap_ci, paired_difference


@dataclass(frozen=True)
class Schedule:
    """How adaptive self-consistency is run: samples in flight (at most, when holding
    back), the stop rule and its threshold (`SelfConsistencyParams`)."""

    parallel: int
    confidence: float
    min_samples: int = DEFAULT_MIN_SAMPLES
    stopping: StopRule = DEFAULT_STOPPING
    hold_back: bool = False

    @property
    def label(self) -> str:
        label = f"{self.stopping} parallel={self.parallel} confidence={self.confidence}"
        if self.min_samples != DEFAULT_MIN_SAMPLES:
            label += f" min_samples={self.min_samples}"
        if self.hold_back:
            label += " holding back"
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
    steps: float
    """Mean decode steps until the answer (the latency, in one sample's token times)."""


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


class Run(NamedTuple):
    """One replayed run: its vote's credit, the tokens it generated (aborted partial
    samples included), and the decode steps until its answer."""

    credit: float
    tokens: float
    steps: float


def simulate(pool: Sequence[SampleTrace], order: Sequence[int], schedule: Schedule) -> Run:
    """One adaptive run drawing `pool` in `order`."""
    params = SelfConsistencyParams(
        n=len(order),
        adaptive=True,
        parallel=schedule.parallel,
        confidence=schedule.confidence,
        min_samples=schedule.min_samples,
        stopping=schedule.stopping,
    )
    right = right_classes(pool)
    running: list[tuple[int, int, int]] = []  # (finish time, draw number, start time)
    started = 0
    votes: dict[int, float] = {}
    finished: list[int] = []

    def held() -> bool:
        return (
            schedule.hold_back
            and bool(running)
            and could_stop_with(votes, params, len(finished), len(running))
        )

    def start(now: int) -> None:
        nonlocal started
        while started < len(order) and len(running) < schedule.parallel and not held():
            heapq.heappush(running, (now + pool[order[started]].tokens, started, now))
            started += 1

    start(0)
    while running:
        now, number, _ = heapq.heappop(running)
        finished.append(number)
        labels = [pool[order[i]].answer_class for i in sorted(finished)]
        votes = plurality(labels)[1]
        if stop_rule(votes, params, len(finished)) is not None:
            partial = sum(now - begun for _, _, begun in running)
            tokens = sum(pool[order[i]].tokens for i in finished) + partial
            return Run(credit(labels, right), float(tokens), float(now))
        start(now)
    labels = [pool[order[i]].answer_class for i in sorted(finished)]
    tokens = sum(pool[order[i]].tokens for i in finished)
    return Run(credit(labels, right), float(tokens), float(now))


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
    every_sample = [float(sum(s.tokens for s in p)) for p in pools]
    all_at_once = [float(max(s.tokens for s in p)) for p in pools]  # every sample in flight
    baseline = _PerProblem(fixed, every_sample, all_at_once)
    results = [_result(None, n, baseline, baseline, seed)]
    for schedule in schedules:
        means = np.array([np.mean([simulate(p, o, schedule) for o in os], axis=0)
                          for p, os in zip(pools, orders, strict=True)])  # fmt: skip
        per_problem = _PerProblem(*(means[:, column].tolist() for column in range(3)))
        results.append(_result(schedule, n, per_problem, baseline, seed))
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


@dataclass(frozen=True)
class _PerProblem:
    """A schedule's `Run` fields, each averaged over drawing orders, one entry a problem."""

    credit: list[float]
    tokens: list[float]
    steps: list[float]


def _result(
    schedule: Schedule | None, n: int, per_problem: _PerProblem, fixed: _PerProblem, seed: int
) -> ScheduleResult:
    """A schedule's figures against fixed N's (`fixed`) over the same problems."""
    mean_tokens = float(np.mean(per_problem.tokens))
    fixed_tokens = float(np.mean(fixed.tokens))
    return ScheduleResult(
        schedule=schedule,
        n=n,
        problems=len(per_problem.credit),
        accuracy=bootstrap_ci(per_problem.credit, seed=seed),
        accuracy_change=paired_difference(per_problem.credit, fixed.credit, seed=seed),
        tokens=mean_tokens,
        token_saving=1.0 - mean_tokens / fixed_tokens if fixed_tokens else 0.0,
        steps=float(np.mean(per_problem.steps)),
    )


def format_table(results: Sequence[ScheduleResult]) -> str:
    """A Markdown table, one row per schedule, the fixed-N baseline first."""
    lines = [
        "| schedule | accuracy [95% CI] | change vs fixed N [95% CI] | tokens/problem | saved "
        "| decode steps to answer |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        label = f"fixed N={r.n}" if r.schedule is None else f"adaptive {r.schedule.label}"
        lines.append(
            f"| {label} | {r.accuracy.format()} | {r.accuracy_change.format()} | "
            f"{r.tokens:.0f} | {r.token_saving:.1%} | {r.steps:.0f} |"
        )
    return "\n".join(lines)
