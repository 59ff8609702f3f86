"""Hybrid scoring: how scores and answer classes combine into one pick.

Pure functions over plain lists, shared by every strategy so a rule means the same
thing everywhere. Ties are broken by first appearance (the class whose first member
came first), which makes every rule deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

PRMAggregation = Literal["min", "last", "prod", "mean"]


def aggregate_steps(step_scores: Sequence[float], how: PRMAggregation = "min") -> float:
    """One solution score from its step scores; an empty list scores 0."""
    if not step_scores:
        return 0.0
    if how == "min":
        return min(step_scores)
    if how == "last":
        return step_scores[-1]
    if how == "prod":
        return math.prod(step_scores)
    if how == "mean":
        return sum(step_scores) / len(step_scores)
    raise ValueError(f"unknown PRM aggregation {how!r}")


def _first_seen(labels: Sequence[int | None]) -> dict[int, int]:
    order: dict[int, int] = {}
    for position, label in enumerate(labels):
        if label is not None:
            order.setdefault(label, position)
    return order


def _best(values: dict[int, float], labels: Sequence[int | None]) -> int | None:
    if not values:
        return None
    order = _first_seen(labels)
    return max(values, key=lambda label: (values[label], -order[label]))


def plurality(labels: Sequence[int | None]) -> tuple[int | None, dict[int, float]]:
    """Majority vote: (winning class, votes per class). Unanswered samples do not vote."""
    votes: dict[int, float] = {}
    for label in labels:
        if label is not None:
            votes[label] = votes.get(label, 0.0) + 1.0
    return _best(votes, labels), votes


def weighted_vote(
    labels: Sequence[int | None], weights: Sequence[float]
) -> tuple[int | None, dict[int, float]]:
    """Sum of member weights per class (verifier-weighted SC, inverse-entropy voting)."""
    totals: dict[int, float] = {}
    for label, weight in zip(labels, weights, strict=True):
        if label is not None:
            totals[label] = totals.get(label, 0.0) + weight
    return _best(totals, labels), totals


def pessimistic_vote(
    labels: Sequence[int | None], scores: Sequence[float], alpha: float = 0.5
) -> tuple[int | None, dict[int, float]]:
    """Pessimistic verification: value(a) = mean score of a - alpha * ln(N) / (n_a + 1).

    N counts all samples, answered or not; a class backed by few samples is penalised
    for the uncertainty of its mean.
    """
    total = len(labels)
    members: dict[int, list[float]] = {}
    for label, score in zip(labels, scores, strict=True):
        if label is not None:
            members.setdefault(label, []).append(score)
    values = {
        label: sum(s) / len(s) - alpha * math.log(total) / (len(s) + 1)
        for label, s in members.items()
    }
    return _best(values, labels), values


def argmax_first(values: Sequence[float]) -> int | None:
    """Index of the largest value, the earliest on ties (best-of-N)."""
    if not values:
        return None
    return max(range(len(values)), key=lambda i: (values[i], -i))
