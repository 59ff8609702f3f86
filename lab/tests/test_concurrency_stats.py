"""The timing statistic of `lab.concurrency`: a median with a bootstrap interval."""

from __future__ import annotations

import math

import pytest

from lab.concurrency import median_ci
from ttscale.benchmarks.stats import bootstrap_ci


def test_median_interval_ignores_a_few_stalls_that_drag_the_mean():
    timings = [10.0 + 0.1 * (i % 5) for i in range(95)] + [500.0] * 5  # five stalls
    median, mean = median_ci(timings), bootstrap_ci(timings)
    assert median.mean == pytest.approx(10.2)
    assert 10.0 <= median.low <= median.mean <= median.high <= 10.4
    assert mean.low > median.high  # the stalls drag nearly every mean resample
    assert math.isnan(median_ci([]).mean)
