"""Properties of the grader that every vote and benchmark number stands on.

- equivalence is symmetric;
- a vote class never holds two answers that are not equivalent to each other;
- the partition into vote classes does not depend on the order of the answers;
- grader calls return within their time bound, even on adversarial strings.

Answers are drawn from the spellings in tests/data/grader_pairs.jsonl (so that the
draws meet real equivalences and near misses) and from short random strings.
Examples are bounded and derandomised so that the suite stays fast and repeatable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttscale.verifiers.math_grader import MathGrader

PAIRS = [
    json.loads(line) for line in (Path(__file__).parent / "data" / "grader_pairs.jsonl").open()
]
SPELLINGS = sorted({row[side] for row in PAIRS for side in ("gold", "prediction")})
NOISE = st.text(alphabet="0123456789.,-+/x(){}[]^_\\ $%i\x00\u202e", max_size=10)
ANSWERS = st.one_of(st.sampled_from(SPELLINGS), st.sampled_from(SPELLINGS), NOISE)
ADVERSARIAL = st.one_of(
    st.sampled_from(
        [
            "x" * 20000,
            "\\sum_{n=1}^{10^{9}} n^{n}",
            "(10^{100})!",
            "\\int_0^\\infty e^{-x^{x^{x}}}dx",
            "2^{2^{2^{2^{2^{2}}}}}",
            "\\left(" * 3000,
            "{" * 5000,
        ]
    ),
    st.integers(5, 30).map(lambda n: "(" * n + "1" + ")" * n),
    st.integers(3, 12).map(lambda n: "^{".join(["9"] * n) + "}" * (n - 1)),
    st.integers(100, 10**6).map(lambda n: f"{n}!"),
)
BOUNDED = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def forget(grader: MathGrader) -> None:
    """Empty the grader's caches, so that the next call decides afresh."""
    for cache in (grader._keys, grader._reps, grader._pairs):
        cache.clear()


def partition(labels: list[int | None], positions: list[int]) -> set[frozenset[int]]:
    """The classes as sets of original positions (`positions[i]` is where item i was)."""
    classes: dict[int, set[int]] = {}
    for label, position in zip(labels, positions, strict=True):
        if label is not None:
            classes.setdefault(label, set()).add(position)
    return {frozenset(members) for members in classes.values()}


@BOUNDED
@given(a=ANSWERS, b=ANSWERS)
async def test_equivalence_is_symmetric(grader, a, b):
    forget(grader)
    forward = await grader.is_equivalent(a, b)
    forget(grader)
    assert await grader.is_equivalent(b, a) is forward


@BOUNDED
@given(answers=st.lists(ANSWERS, min_size=2, max_size=10))
async def test_a_vote_class_holds_only_mutually_equivalent_answers(grader, answers):
    labels = await grader.group(answers)
    for i, label in enumerate(labels):
        for j in range(i + 1, len(answers)):
            if label is not None and labels[j] == label:
                assert await grader.is_equivalent(answers[i], answers[j]), (i, j)


@BOUNDED
@given(data=st.data(), answers=st.lists(ANSWERS, min_size=2, max_size=10))
async def test_grouping_does_not_depend_on_the_order_of_answers(grader, data, answers):
    order = data.draw(st.permutations(range(len(answers))))
    forget(grader)
    labels = await grader.group(answers)
    forget(grader)
    shuffled = await grader.group([answers[i] for i in order])
    assert partition(shuffled, list(order)) == partition(labels, list(range(len(answers))))


@pytest.fixture(scope="module")
def quick_grader() -> Iterator[MathGrader]:
    grader = MathGrader(workers=2, timeout_s=1.0)
    yield grader
    grader.close()


SLACK_S = 1.5


@settings(BOUNDED, max_examples=12)
@given(bad=ADVERSARIAL, fair=st.sampled_from(SPELLINGS))
async def test_grader_calls_return_within_their_time_bound(quick_grader, bad, fair):
    """`is_equivalent` runs one worker task (timeout_s); `group` has 2 * timeout_s.

    The clock starts once both workers are up and idle: the previous example's timeouts
    killed workers, and the time their replacements take to start is the pool's, not the
    time bound of the call under test."""
    await quick_grader.warm_up()
    started = time.perf_counter()
    assert not await quick_grader.is_equivalent("5", bad)
    assert time.perf_counter() - started < quick_grader.timeout_s + SLACK_S
    started = time.perf_counter()
    labels = await quick_grader.group([bad, fair, bad + " ", fair])
    assert time.perf_counter() - started < 2 * quick_grader.timeout_s + SLACK_S
    assert labels[1] == labels[3] and labels[0] != labels[1]
