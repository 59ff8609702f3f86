"""The benchmark's statistics, checked against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ttscale.benchmarks.stats import (
    bootstrap_ci,
    paired_difference,
    paired_ratio,
    pass_at_k,
    select_credit,
    subsets,
    vote_credit,
)
from ttscale.verifiers.aggregate import weighted_vote


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 2, 1 - math.comb(3, 2) / math.comb(5, 2)),  # 0.7
        (10, 3, 1, 0.3),
        (5, 0, 3, 0.0),
        (5, 5, 1, 1.0),
        (4, 2, 3, 1.0),  # any 3 of 4 include a correct one
    ],
)
def test_pass_at_k_is_the_unbiased_estimator(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 6, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_refuses_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_bootstrap_of_a_constant_has_no_width():
    interval = bootstrap_ci([1.0] * 20)
    assert (interval.mean, interval.low, interval.high) == (1.0, 1.0, 1.0)


def test_bootstrap_interval_matches_the_binomial_standard_error():
    values = [1.0] * 50 + [0.0] * 50  # mean 0.5, standard error 0.05
    interval = bootstrap_ci(values, resamples=4000)
    assert interval.mean == 0.5
    assert interval.low == pytest.approx(0.5 - 1.96 * 0.05, abs=0.015)
    assert interval.high == pytest.approx(0.5 + 1.96 * 0.05, abs=0.015)


def test_bootstrap_is_reproducible_and_narrows_with_more_problems():
    rng = np.random.default_rng(1)
    few = rng.integers(0, 2, 20).tolist()
    assert bootstrap_ci(few, seed=3) == bootstrap_ci(few, seed=3)
    many = few * 10
    narrow, wide = bootstrap_ci(many), bootstrap_ci(few)
    assert narrow.high - narrow.low < (wide.high - wide.low) / 2


def test_bootstrap_of_nothing_is_nan():
    assert math.isnan(bootstrap_ci([]).mean)


def test_paired_difference_cancels_shared_difficulty():
    a = [1.0, 1.0, 0.0, 0.0, 1.0, 0.0] * 5
    assert paired_difference(a, a).format() == "0.000 [0.000, 0.000]"
    better = [1.0] * 30
    diff = paired_difference(better, a)
    assert diff.mean == pytest.approx(0.5)
    assert diff.low > 0.25
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 0.0])


def test_paired_ratio_is_a_ratio_of_totals_resampled_in_pairs():
    # half the problems cut to a tenth, half not at all: the ratio of totals
    # (1100 / 2000), not the mean of the per-problem ratios; a resample holding only
    # uncut problems is all but impossible with 20, so the interval stays below 1
    baseline = [1000.0, 1000.0] * 10
    mine = [100.0, 1000.0] * 10
    ratio = paired_ratio(mine, baseline)
    assert ratio.mean == pytest.approx(sum(mine) / sum(baseline))
    assert ratio.low < ratio.mean < ratio.high < 1.0
    assert paired_ratio(baseline, baseline).format() == "1.000 [1.000, 1.000]"
    assert math.isnan(paired_ratio([], []).mean)
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])


def _majority(labels: list[int], right: set[int], k: int, draws: int = 500) -> float:
    label_array = np.array(labels)
    rows = subsets(len(labels), k, draws=draws, rng=np.random.default_rng(0))
    return vote_credit(label_array, np.ones(len(labels)), right, rows)


@pytest.mark.parametrize(("k", "expected"), [(1, 0.6), (2, 0.6), (3, 0.7), (5, 1.0)])
def test_exact_expectation_over_every_subset(k, expected):
    """Three votes for the right class, two for a wrong one. k=2: 3 of 10 pairs are
    right-right, 6 are ties worth 1/2, so 0.6; k=3: 7 of 10 triples hold 2+ right."""
    assert _majority([0, 0, 0, 1, 1], {0}, k) == pytest.approx(expected)


def test_monte_carlo_estimate_is_close_to_the_exact_value():
    labels = [0] * 12 + [1] * 8
    exact = _majority(labels, {0}, 5, draws=10**6)
    assert math.comb(20, 5) > 2000  # the next call really samples
    assert _majority(labels, {0}, 5, draws=2000) == pytest.approx(exact, abs=0.04)
    with pytest.raises(ValueError):
        subsets(5, 6, draws=10, rng=np.random.default_rng(0))


def test_monte_carlo_subsets_are_without_replacement():
    rows = subsets(10, 4, draws=50, rng=np.random.default_rng(0))
    assert rows.shape == (50, 4)
    assert all(len(set(row)) == 4 for row in rows.tolist())


def test_unanswered_samples_do_not_vote_and_ties_split():
    rows = np.array([[0, 1, 2]])
    # one abstention, one vote each for classes 0 (right) and 1: a tie worth 1/2
    assert vote_credit(np.array([-1, 0, 1]), np.ones(3), {0}, rows) == 0.5
    assert vote_credit(np.array([-1, -1, -1]), np.ones(3), set(), rows) == 0.0
    assert select_credit(np.array([0.2, 0.9, 0.9]), np.array([True, True, False]), rows) == 0.5


def test_vectorised_votes_agree_with_the_strategies_vote_rule():
    """Replay must score a subset exactly as weighted_vote (used by the strategies) picks
    its winner; random subsets, weights without ties."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        size = int(rng.integers(1, 9))
        labels = rng.integers(-1, 4, size)
        weights = rng.random(size)
        right = {int(c) for c in rng.integers(0, 4, 2)}
        winner, _ = weighted_vote([None if c < 0 else int(c) for c in labels], weights.tolist())
        expected = float(winner in right) if winner is not None else 0.0
        rows = np.arange(size)[None, :]
        assert vote_credit(labels, weights, right, rows) == expected
