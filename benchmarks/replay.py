"""Trace replay: evaluate voting and selection rules offline from recorded samples.

A run records every sample (answer class, correctness, tokens, entropy, logprob,
verifier scores). Replay takes one setting's samples per problem as a pool and asks
what each rule would score with k of them, averaged over k-subsets of the pool
(every subset when there are few, Monte Carlo otherwise), as the discriminative-
verification paper's estimate does. No generation happens: a GPU run's records can be
analysed anywhere.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import ValidationError

from ttscale.strategies.inverse_entropy import EPSILON
from ttscale.strategies.registry import baseline, discover
from ttscale.verifiers.aggregate import aggregate_steps

from .datasets import BenchError
from .records import Record, SampleTrace
from .stats import Interval, bootstrap_ci, pass_at_k, select_credit, subsets, vote_credit

DERIVED_SCORES = {"inverse_entropy_weight", "mean_logprob"}
"""Scores that restate what the entropy and logprob rules already use."""


@dataclass(frozen=True)
class ReplayPoint:
    dataset: str
    pool: str
    method: str
    k: int
    problems: int
    accuracy: Interval
    generated_tokens: float
    tflops: float


@dataclass(frozen=True)
class Rule:
    """A voting rule (sum of per-sample weights per answer class, the top class wins) or
    a selection rule (the top-valued sample wins), as the strategies apply them."""

    kind: Literal["vote", "select"]
    value: Callable[[SampleTrace], float]

    def credit(self, samples: Sequence[SampleTrace], rows: np.ndarray) -> float:
        values = np.array([self.value(s) for s in samples], dtype=float)
        if self.kind == "select":
            return select_credit(values, np.array([s.correct for s in samples]), rows)
        labels = np.array(
            [-1 if s.answer_class is None else s.answer_class for s in samples], dtype=np.int64
        )
        right = {s.answer_class for s in samples if s.correct and s.answer_class is not None}
        return vote_credit(labels, values, right, rows)


def _score(name: str) -> Callable[[SampleTrace], float]:
    def value(sample: SampleTrace) -> float:
        raw = sample.scores[name]
        return aggregate_steps(raw) if isinstance(raw, list) else float(raw)

    return value


def rules_for(pools: Sequence[Sequence[SampleTrace]]) -> dict[str, Rule]:
    """The rules the recorded data supports (entropy and scores only if every sample has
    them)."""
    every = [s for pool in pools for s in pool]
    rules = {"majority": Rule("vote", lambda s: 1.0)}
    if every and all(s.mean_entropy is not None for s in every):
        rules["inverse_entropy"] = Rule("vote", lambda s: 1.0 / (s.mean_entropy + EPSILON))
    if every and all(s.mean_logprob is not None for s in every):
        rules["best_of_n(logprob)"] = Rule("select", lambda s: s.mean_logprob)
    names = set.intersection(*(set(s.scores) for s in every)) if every else set()
    for name in sorted(n for n in names - DERIVED_SCORES if not n.endswith("_steps")):
        rules[f"best_of_n({name})"] = Rule("select", _score(name))
        rules[f"weighted_sc({name})"] = Rule("vote", _score(name))
    return rules


def default_pool(records: Sequence[Record]) -> str:
    """The setting with the most samples per problem among those that draw independent
    samples (as their strategies declare: no stop rule, no sequential refinement); any
    setting otherwise."""
    strategies = discover()

    def independent(record: Record) -> bool:
        strategy = strategies.get(record.strategy)
        if strategy is None:
            return False
        try:
            return strategy.parse_params(record.params).draws_independent_samples()
        except ValidationError:  # parameters of another version of the strategy
            return False

    sizes: dict[str, list[int]] = defaultdict(list)
    for record in records:
        sizes[record.setting].append(len(record.samples))
    candidates = {r.setting for r in records if independent(r)} or set(sizes)
    if not candidates:
        raise BenchError("no records to replay")
    # on equal size the baseline (plain self-consistency) wins: the plainest draw
    plainest = f"{baseline(strategies)}@"
    return max(sorted(candidates), key=lambda s: (min(sizes[s]), s.startswith(plainest)))


def powers_of_two(limit: int) -> list[int]:
    ks, k = [], 1
    while k <= limit:
        ks.append(k)
        k *= 2
    if ks[-1] != limit:
        ks.append(limit)
    return ks


def replay(
    records: Sequence[Record],
    *,
    pool: str | None = None,
    ks: Sequence[int] | None = None,
    draws: int = 500,
    seed: int = 0,
) -> list[ReplayPoint]:
    """Accuracy of every supported rule at each k, per dataset, from one pool setting."""
    pool = pool or default_pool(records)
    chosen = [r for r in records if r.setting == pool]
    if not chosen:
        raise BenchError(f"no records of setting {pool!r} to replay")
    rng = np.random.default_rng(seed)
    points: list[ReplayPoint] = []
    by_dataset: dict[str, list[Record]] = defaultdict(list)
    for record in chosen:
        by_dataset[record.dataset].append(record)
    for dataset, everything in sorted(by_dataset.items()):
        rows = [r for r in everything if r.samples]
        unanswered = len(everything) - len(rows)  # no sample at all: every rule scores 0
        if not rows:
            continue
        pools = [r.samples for r in rows]
        smallest = min(len(p) for p in pools)
        wanted = ks or powers_of_two(smallest)
        too_big = [k for k in wanted if k > smallest]
        if too_big:
            raise BenchError(f"k={too_big[0]} exceeds the smallest pool ({smallest} samples)")
        rules = rules_for(pools)
        for k in wanted:
            tokens = [k * sum(s.tokens for s in p) / len(p) for p in pools]
            # generation FLOPs only: a rule that uses no verifier should not pay for one
            flops = [
                (r.flops - r.verifier_flops) * tok / r.generated_tokens
                if r.generated_tokens
                else 0.0
                for r, tok in zip(rows, tokens, strict=True)
            ]
            results = {"pass@k": [pass_at_k(len(p), sum(s.correct for s in p), k) for p in pools]}
            drawn = [subsets(len(p), k, draws=draws, rng=rng) for p in pools]
            for name, rule in rules.items():
                results[name] = [rule.credit(p, rows) for p, rows in zip(pools, drawn, strict=True)]
            for method, values in results.items():
                points.append(
                    ReplayPoint(
                        dataset=dataset,
                        pool=pool,
                        method=method,
                        k=k,
                        problems=len(everything),
                        accuracy=bootstrap_ci(values + [0.0] * unanswered, seed=seed),
                        generated_tokens=float(np.mean(tokens + [0.0] * unanswered)),
                        tflops=float(np.mean(flops + [0.0] * unanswered)) / 1e12,
                    )
                )
    return points
