"""Replay of DeepConf (online and offline) against self-consistency on recorded traces.

The pool is a setting whose traces all ran to full length with their confidences
recorded: `deepconf?warmup=N` at budget N (every trace is a warm-up trace, none is
stopped; with the benchmark's per-sample seeds they are the traces self_consistency@N
draws). Each trace carries its confidence and `confidence_drops`, where its lowest
window fell, which is enough to know where the online watch would have aborted it for
any threshold.

Each problem's pool is replayed over random drawing orders, as `adaptive_replay` does:
the first `warmup` traces of an order set the threshold with the strategy's own rule
(`warmup_threshold`), the others start `in_flight()` at a time and run to their end or to
their first drop below the threshold; the vote is checked with the strategy's own
`consensus_rule` as retained traces finish, and a decided vote aborts the traces in
flight, billed for the tokens they had. Two simplifications: every trace decodes at the
same speed, and an abort takes effect at the token that crossed (live, the stop lands a
chunk later, a few tokens).

Every row is compared with self-consistency *at the same generated tokens*: per problem,
the majority vote of the first k traces of the same orders, interpolated in k to the
row's token count (common random numbers: the same traces, used two ways).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ttscale.strategies.deepconf import (
    KEPT_PERCENT,
    DeepConfParams,
    consensus_rule,
    percentile,
    warmup_threshold,
)
from ttscale.strategies.deepconf import (
    STRATEGY as DEEPCONF,
)
from ttscale.strategies.self_consistency import SelfConsistencyParams

from .adaptive_replay import Schedule, credit, right_classes, simulate
from .datasets import BenchError
from .records import Record, SampleTrace
from .stats import Interval, bootstrap_ci, paired_difference


@dataclass(frozen=True)
class PoolTrace:
    """One recorded full-length trace, as the replay needs it."""

    answer_class: int | None
    tokens: int
    confidence: float
    drops: tuple[tuple[int, float], ...]

    @classmethod
    def of(cls, sample: SampleTrace) -> PoolTrace:
        scores = sample.scores
        confidence = scores.get("confidence")
        if not isinstance(confidence, float | int):
            raise BenchError("a pool trace has no confidence: record it with deepconf?warmup=N")
        flat = scores.get("confidence_drops", [])
        flat = flat if isinstance(flat, list) else [flat]
        drops = tuple((int(flat[i]), float(flat[i + 1])) for i in range(0, len(flat) - 1, 2))
        return cls(sample.answer_class, sample.tokens, float(confidence), drops)

    def stop_at(self, threshold: float) -> int | None:
        """Tokens at which the watch aborts this trace, None if it runs to its end."""
        return next((tokens for tokens, low in self.drops if low < threshold), None)


@dataclass(frozen=True)
class Row:
    label: str
    accuracy: Interval
    tokens: float
    """Mean generated tokens per problem, aborted partial traces included."""
    saving: float
    """1 - tokens / tokens of self-consistency over every trace."""
    matched: Interval
    """Self-consistency at this row's tokens, per problem."""
    difference: Interval
    """This row minus `matched`, paired over problems."""


def offline(pool: Sequence[PoolTrace], right: set[int], variant: str) -> tuple[float, float]:
    """DeepConf offline: every trace runs; those in the variant's top share by
    confidence vote, weighted by it."""
    bar = percentile([t.confidence for t in pool], 100 - KEPT_PERCENT[variant])
    kept = [t for t in pool if t.confidence >= bar]
    credited = credit([t.answer_class for t in kept], right, [t.confidence for t in kept])
    return credited, float(sum(t.tokens for t in pool))


def online(
    pool: Sequence[PoolTrace], order: Sequence[int], params: DeepConfParams, right: set[int]
) -> tuple[float, float]:
    """(credit, generated tokens) of one online DeepConf run drawing `pool` in `order`."""
    warm = [pool[i] for i in order[: params.warmup_traces]]
    threshold = warmup_threshold([t.confidence for t in warm], params.variant)
    voters: list[PoolTrace] = []

    def add(trace: PoolTrace) -> bool:
        """Count a finished trace; True when the vote is decided."""
        if trace.confidence < threshold:
            return False
        voters.append(trace)
        return consensus_rule([t.answer_class for t in voters], params.consensus) is not None

    def result() -> float:
        return credit([t.answer_class for t in voters], right, [t.confidence for t in voters])

    tokens = float(sum(t.tokens for t in warm))
    decided = any([add(t) for t in warm])  # every warm-up trace is counted, as live
    rest = [pool[i] for i in order[params.warmup_traces :]]
    if decided or not rest:
        return result(), tokens
    # (finish time, draw number, start time, stopped by the watch)
    running: list[tuple[int, int, int, bool]] = []
    started = 0

    def start(now: int) -> None:
        nonlocal started
        while started < len(rest) and len(running) < params.in_flight():
            trace = rest[started]
            stop = trace.stop_at(threshold)
            finish = now + (trace.tokens if stop is None else stop)
            heapq.heappush(running, (finish, started, now, stop is not None))
            started += 1

    start(0)
    while running:
        now, number, begun, stopped = heapq.heappop(running)
        tokens += now - begun
        if not stopped and add(rest[number]):
            return result(), tokens + sum(now - b for _, _, b, _ in running)
        start(now)
    return result(), tokens


def replay_deepconf(
    records: Sequence[Record],
    variants: Sequence[DeepConfParams],
    *,
    pool: str,
    draws: int = 200,
    seed: int = 0,
) -> list[Row]:
    """Self-consistency over every trace, adaptive self-consistency (the default
    schedule), DeepConf offline (low, high) and each online variant on the pool."""
    chosen = _pool_records(records, pool)
    n = min(len(r.samples) for r in chosen)
    samples = [r.samples[:n] for r in chosen]
    pools = [[PoolTrace.of(s) for s in pool_samples] for pool_samples in samples]
    rights = [right_classes(pool_samples) for pool_samples in samples]
    rng = np.random.default_rng(seed)
    orders = [[rng.permutation(n) for _ in range(draws)] for _ in pools]
    curves = [_majority_curve(p, os, r) for p, os, r in zip(pools, orders, rights, strict=True)]
    full = [(curve[0][-1], curve[1][-1]) for curve in curves]
    runs: list[tuple[str, list[tuple[float, float]]]] = [(f"self-consistency, all {n}", full)]
    adaptive = SelfConsistencyParams(n=n, adaptive=True)
    schedule = Schedule(
        adaptive.in_flight_when_busy(), adaptive.confidence, adaptive.min_samples, adaptive.stopping
    )
    runs.append(
        (
            f"adaptive self-consistency ({schedule.label})",
            _mean_runs(samples, orders, rights, lambda p, o, _: simulate(p, o, schedule)),
        )
    )
    for variant in ("high", "low"):
        runs.append(
            (
                f"DeepConf-{variant} offline (top {KEPT_PERCENT[variant]}% of {n})",
                [offline(p, r, variant) for p, r in zip(pools, rights, strict=True)],
            )
        )
    for params in variants:
        run_params = params.model_copy(update={"n": n})
        runs.append(
            (
                _online_label(run_params),
                _mean_runs(pools, orders, rights, lambda p, o, r, q=run_params: online(p, o, q, r)),
            )
        )
    runs += _live_runs(records, chosen)
    baseline_tokens = float(np.mean([tokens for _, tokens in full]))
    return [_row(label, values, curves, baseline_tokens, seed) for label, values in runs]


def _live_runs(
    records: Sequence[Record], pool: Sequence[Record]
) -> list[tuple[str, list[tuple[float, float]]]]:
    """The other settings recorded on the pool's problems, as they ran (one draw each):
    the live check of a replayed row, and strategies that cannot be replayed from
    independent traces (particle filtering). Verifier tokens are named, not added."""
    problems = [(r.dataset, r.problem_id) for r in pool]
    by_setting: dict[str, dict[tuple[str, str], Record]] = {}
    for r in records:
        if r.setting != pool[0].setting:
            by_setting.setdefault(r.setting, {})[(r.dataset, r.problem_id)] = r
    runs = []
    for setting, found in sorted(by_setting.items()):
        if not all(problem in found for problem in problems):
            continue
        chosen = [found[problem] for problem in problems]
        verifier = np.mean([r.verifier_tokens for r in chosen])
        label = f"live: {setting}" + (f" (+{verifier:.0f} verifier tokens)" if verifier else "")
        runs.append((label, [(float(r.correct), float(r.generated_tokens)) for r in chosen]))
    return runs


def confidence_auroc(records: Sequence[Record], pool: str) -> tuple[float, int]:
    """How well trace confidence tells right traces from wrong ones of the same problem:
    P(a right trace is more confident than a wrong one, ties half), over every such pair
    of every problem that has both; and how many problems had both. 0.5 is chance. The
    whole of DeepConf rests on this being well above 0.5."""
    wins = pairs = 0.0
    mixed = 0
    for r in _pool_records(records, pool):
        scored = [(s.correct, PoolTrace.of(s).confidence) for s in r.samples]
        right = [confidence for correct, confidence in scored if correct]
        wrong = [confidence for correct, confidence in scored if not correct]
        if not right or not wrong:
            continue
        mixed += 1
        for a in right:
            wins += sum(1.0 if a > b else 0.5 if a == b else 0.0 for b in wrong)
        pairs += len(right) * len(wrong)
    return (wins / pairs if pairs else float("nan")), mixed


def full_trace_pool(records: Sequence[Record]) -> str:
    """The deepconf setting whose traces are all warm-up traces (so none was stopped)."""
    for record in records:
        warmup = record.params.get("warmup")
        if record.strategy == DEEPCONF.name and warmup is not None and warmup >= record.n:
            return record.setting
    raise BenchError("no deepconf?warmup=N setting at budget N to replay; name one with --pool")


def _pool_records(records: Sequence[Record], pool: str) -> list[Record]:
    chosen = [r for r in records if r.setting == pool and r.samples]
    if not chosen:
        raise BenchError(f"no records of setting {pool!r} to replay")
    if any(s.finish_reason == "abort" for r in chosen for s in r.samples):
        raise BenchError(f"setting {pool!r} has stopped traces: record full ones (warmup=N)")
    return chosen


def _majority_curve(
    pool: Sequence[PoolTrace], orders: Sequence[np.ndarray], right: set[int]
) -> tuple[list[float], list[float]]:
    """(credit, tokens) of a plurality vote over the first k traces, k = 1..n, averaged
    over the orders."""
    credits, tokens = [], []
    for k in range(1, len(pool) + 1):
        credits.append(
            float(np.mean([credit([pool[i].answer_class for i in o[:k]], right) for o in orders]))
        )
        tokens.append(float(np.mean([sum(pool[i].tokens for i in o[:k]) for o in orders])))
    return credits, tokens


def _mean_runs(
    pools: Sequence[Sequence[Any]],
    orders: Sequence[Sequence[np.ndarray]],
    rights: Sequence[set[int]],
    run: Callable[[Sequence[Any], np.ndarray, set[int]], tuple[float, float]],
) -> list[tuple[float, float]]:
    """Per problem, (credit, tokens) of `run` averaged over the drawing orders."""
    means = []
    for pool, pool_orders, right in zip(pools, orders, rights, strict=True):
        runs = np.array([run(pool, order, right) for order in pool_orders])
        means.append((float(runs[:, 0].mean()), float(runs[:, 1].mean())))
    return means


def _row(
    label: str,
    values: list[tuple[float, float]],
    curves: list[tuple[list[float], list[float]]],
    baseline_tokens: float,
    seed: int,
) -> Row:
    credits = [c for c, _ in values]
    matched = [
        float(np.interp(tokens, curve_tokens, curve_credits))
        for (_, tokens), (curve_credits, curve_tokens) in zip(values, curves, strict=True)
    ]
    tokens = float(np.mean([t for _, t in values]))
    return Row(
        label=label,
        accuracy=bootstrap_ci(credits, seed=seed),
        tokens=tokens,
        saving=1.0 - tokens / baseline_tokens if baseline_tokens else 0.0,
        matched=bootstrap_ci(matched, seed=seed),
        difference=paired_difference(credits, matched, seed=seed),
    )


def _online_label(params: DeepConfParams) -> str:
    consensus = "no consensus stop" if params.consensus is None else f"consensus {params.consensus}"
    return (
        f"DeepConf-{params.variant} online (warm-up {params.warmup_traces}, "
        f"{params.in_flight()} in flight, {consensus})"
    )


def format_rows(rows: Sequence[Row]) -> str:
    lines = [
        "| setting | accuracy [95% CI] | tokens/problem | saved | "
        "self-consistency at the same tokens | difference [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.label} | {r.accuracy.format()} | {r.tokens:.0f} | {r.saving:.1%} | "
            f"{r.matched.format()} | {r.difference.format()} |"
        )
    return "\n".join(lines)
