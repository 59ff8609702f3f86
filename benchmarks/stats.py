"""Statistics for benchmark results: bootstrap intervals, pass@k, expected vote accuracy.

Problems are the unit of resampling: a benchmark of 30 AIME problems says little, and
the intervals should show it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    def format(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def bootstrap_ci(
    values: Sequence[float], *, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0
) -> Interval:
    """Mean and percentile-bootstrap interval over the items (problems)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return Interval(math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(data.mean()), float(low), float(high))


def paired_difference(first: Sequence[float], second: Sequence[float], **kwargs: float) -> Interval:
    """Mean of first - second over the same problems, with a bootstrap interval that
    resamples problems (so shared difficulty cancels)."""
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if a.shape != b.shape:
        raise ValueError("paired samples must have the same length")
    return bootstrap_ci(a - b, **kwargs)  # type: ignore[arg-type]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., 2021):
    1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


Credit = Callable[[Sequence[int]], float]
"""Credit of one draw (indices into a pool): 1 right, 0 wrong, a fraction on ties."""


def expected_credit(
    pool_size: int, k: int, credit: Credit, *, draws: int = 500, rng: np.random.Generator
) -> float:
    """Expected credit of a rule over k-subsets of a pool drawn without replacement:
    exact (every subset) when there are at most `draws` subsets, Monte Carlo otherwise."""
    if not 1 <= k <= pool_size:
        raise ValueError(f"k={k} must be between 1 and the pool size {pool_size}")
    if math.comb(pool_size, k) <= draws:
        subsets = list(itertools.combinations(range(pool_size), k))
        return sum(credit(s) for s in subsets) / len(subsets)
    total = 0.0
    for _ in range(draws):
        total += credit(rng.choice(pool_size, size=k, replace=False).tolist())
    return total / draws


def top_credit(values: dict[int, float], correct: set[int]) -> float:
    """Credit when the highest value wins and ties split at random: the share of the
    tied leaders that are correct."""
    if not values:
        return 0.0
    best = max(values.values())
    leaders = [key for key, value in values.items() if value == best]
    return sum(key in correct for key in leaders) / len(leaders)
