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
    """The point estimate (the mean, unless the interval is of another statistic)."""
    low: float
    high: float

    def format(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def bootstrap_ci(
    values: Sequence[float], *, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0
) -> Interval:
    """Mean and percentile-bootstrap interval over the items (problems)."""
    return _bootstrap(values, np.mean, resamples, level, seed)


def _bootstrap(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[..., np.ndarray],
    resamples: int,
    level: float,
    seed: int,
    percentile: Callable[..., np.ndarray] = np.percentile,
) -> Interval:
    """`statistic(rows, axis=1)` of the items and of `resamples` resamples of them (items
    are the rows of `values`: one number, or a pair for paired statistics)."""
    data = np.asarray(values, dtype=float)
    if len(data) == 0:
        return Interval(math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    estimates = statistic(data[rng.integers(0, len(data), size=(resamples, len(data)))], axis=1)
    tail = (1 - level) / 2 * 100
    low, high = percentile(estimates, [tail, 100 - tail])
    return Interval(float(statistic(data[None], axis=1)[0]), float(low), float(high))


def paired_difference(first: Sequence[float], second: Sequence[float], **kwargs: float) -> Interval:
    """Mean of first - second over the same problems, with a bootstrap interval that
    resamples problems (so shared difficulty cancels)."""
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if a.shape != b.shape:
        raise ValueError("paired samples must have the same length")
    return bootstrap_ci(a - b, **kwargs)  # type: ignore[arg-type]


def paired_ratio(
    first: Sequence[float],
    second: Sequence[float],
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> Interval:
    """sum(first) / sum(second) over the same problems (e.g. tokens against a baseline's),
    with a bootstrap interval that resamples problems in pairs: a ratio of totals, so
    that long problems weigh as much as they cost."""
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if a.shape != b.shape:
        raise ValueError("paired samples must have the same length")
    if a.size == 0 or b.sum() == 0:
        return Interval(math.nan, math.nan, math.nan)
    pairs = np.column_stack((a, b))
    return _bootstrap(pairs, _ratio_of_totals, resamples, level, seed, np.nanpercentile)


def _ratio_of_totals(pairs: np.ndarray, axis: int) -> np.ndarray:
    """First over second column, each summed along `axis` (a resample of zero baseline
    is NaN, left out of the interval)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return pairs[..., 0].sum(axis=axis) / pairs[..., 1].sum(axis=axis)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., 2021):
    1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def subsets(pool_size: int, k: int, *, draws: int, rng: np.random.Generator) -> np.ndarray:
    """k-subsets of a pool as rows of indices: every subset when there are at most
    `draws` of them (exact expectation), else `draws` uniform draws without replacement."""
    if not 1 <= k <= pool_size:
        raise ValueError(f"k={k} must be between 1 and the pool size {pool_size}")
    if math.comb(pool_size, k) <= draws:
        return np.array(list(itertools.combinations(range(pool_size), k)), dtype=np.int64)
    return rng.random((draws, pool_size)).argsort(axis=1)[:, :k]


def _share_of_correct_leaders(values: np.ndarray, correct: np.ndarray) -> float:
    """Mean over rows of the share of each row's top entries that are correct: the
    expected credit when ties are broken at random. -inf marks entries out of the race;
    a row with none in it scores 0."""
    best = values.max(axis=1, keepdims=True)
    leaders = (values == best) & np.isfinite(best)
    count = leaders.sum(axis=1)
    hits = (leaders & correct).sum(axis=1)
    return float(np.where(count > 0, hits / np.maximum(count, 1), 0.0).mean())


def vote_credit(
    labels: np.ndarray, weights: np.ndarray, correct_labels: set[int], rows: np.ndarray
) -> float:
    """Expected credit of a weighted vote over answer classes (label -1: no answer, no
    vote) for the subsets in `rows`."""
    classes = int(labels.max()) + 1 if labels.size else 0
    if classes == 0:
        return 0.0
    drawn = labels[rows]
    voting = drawn >= 0
    totals = np.zeros((rows.shape[0], classes))
    present = np.zeros((rows.shape[0], classes), dtype=bool)
    row_index = np.broadcast_to(np.arange(rows.shape[0])[:, None], drawn.shape)
    np.add.at(totals, (row_index[voting], drawn[voting]), weights[rows][voting])
    present[row_index[voting], drawn[voting]] = True
    right = np.zeros(classes, dtype=bool)
    right[[c for c in correct_labels if c < classes]] = True
    return _share_of_correct_leaders(np.where(present, totals, -np.inf), right[None, :])


def select_credit(values: np.ndarray, correct: np.ndarray, rows: np.ndarray) -> float:
    """Expected credit of picking the highest-valued sample of each subset in `rows`."""
    return _share_of_correct_leaders(values[rows], correct[rows])
