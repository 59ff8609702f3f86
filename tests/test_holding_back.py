"""Holding back adaptive samples: a sample waits while the ones in flight could settle
the vote. `could_stop_with` judges that by the in-flight samples' best case (each votes
for the leader); these tests check it against every way their answers could go."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ttscale.strategies.self_consistency import (
    SelfConsistencyParams,
    could_stop_with,
    stop_rule,
)

Counts = tuple[int, ...]
"""Votes per answer, largest first (which answer is which does not matter to the rules)."""


def stops(counts: Counts, seen: int, params: SelfConsistencyParams) -> bool:
    return stop_rule(dict(enumerate(map(float, counts))), params, seen) is not None


def next_counts(counts: Counts) -> Iterator[Counts]:
    """One more finished sample: a vote for a known answer, a new answer, or none."""
    for i in range(len(counts)):
        yield tuple(sorted((*counts[:i], counts[i] + 1, *counts[i + 1 :]), reverse=True))
    yield (*counts, 1)
    yield counts


def some_order_stops(counts: Counts, seen: int, in_flight: int, params) -> bool:
    """Whether any answers of the `in_flight` samples, in any finishing order, stop the
    run at some point while they finish."""
    states = {counts}
    for k in range(1, in_flight + 1):
        states = {after for state in states for after in next_counts(state)}
        if any(stops(state, seen + k, params) for state in states):
            return True
    return False


def partitions(total: int, largest: int | None = None) -> Iterator[Counts]:
    largest = total if largest is None else largest
    if total == 0:
        yield ()
    for part in range(min(total, largest), 0, -1):
        for rest in partitions(total - part, part):
            yield (part, *rest)


@pytest.mark.parametrize(("n", "confidence"), [(8, 0.9), (8, 0.95), (16, 0.925)])
def test_the_best_case_says_whether_samples_in_flight_could_stop_the_run(n, confidence):
    """Every undecided state (votes, samples without an answer) with up to four samples
    in flight: the best case stops exactly when some answers would, so holding back
    never delays a sample that no answers could make needless, and never starts one
    that some could."""
    params = SelfConsistencyParams(n=n, adaptive=True, confidence=confidence)
    checked = 0
    for seen in range(n):
        for voted in range(seen + 1):
            for counts in partitions(voted):
                if stops(counts, seen, params):
                    continue
                votes = dict(enumerate(map(float, counts)))
                for in_flight in range(1, min(4, n - seen) + 1):
                    expected = some_order_stops(counts, seen, in_flight, params)
                    assert could_stop_with(votes, params, seen, in_flight) == expected
                    checked += 1
    assert checked > 100  # the loops did run over many states


def test_no_sample_is_held_back_before_any_could_stop_the_run():
    """The first two samples of n=16 cannot stop the run (three at least vote), so
    they and a third start together; the fourth waits on the three, which could."""
    params = SelfConsistencyParams(n=16, adaptive=True)
    assert [could_stop_with({}, params, 0, k) for k in (1, 2, 3)] == [False, False, True]
