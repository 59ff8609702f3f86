"""Each request's grading is bounded: a total deadline, a capped share of the worker pool,
and an account of what it cost. Real worker processes; the slow answers are integrals
that sympy cannot finish, so every check of one runs into its timeout."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from ttscale.engine.types import SamplingSpec
from ttscale.verifiers.math_grader import MathGrader

from .support.fakes import Scripted, ScriptedEngine
from .support.servers import serving_engine

TIMEOUT_S = 3.0
SLOW = [f"\\int_0^{{\\infty}} e^{{-x^{{{100 + i}}}}} \\sin(x^{{50}}) dx" for i in range(8)]
NORMAL = ["\\frac{1}{2}", "0.5", "\\sin^2 x + \\cos^2 x", "1", "2k+2", "2(k+1)"]
NORMAL_CLASSES = [0, 0, 1, 1, 2, 2]  # the identity needs a math-verify check, not only keys


@pytest.fixture
async def pool() -> AsyncIterator[MathGrader]:
    """A fresh pool per test: what one test's timeouts cached must not help the next."""
    grader = MathGrader(workers=2, timeout_s=TIMEOUT_S)
    await grader.warm_up()
    yield grader
    grader.close()


async def _timed_group(grader: MathGrader, answers: list[str]) -> tuple[list[int | None], float]:
    started = time.perf_counter()
    labels = await grader.group(answers)
    return labels, time.perf_counter() - started


async def test_slow_answers_end_at_the_deadline_and_do_not_hold_up_another_request(pool):
    slow_request, normal_request = pool.for_request(4.0), pool.for_request(10.0)

    async def normal_later():
        await asyncio.sleep(0.3)  # the slow request's checks are already running
        return await _timed_group(normal_request, NORMAL)

    (slow_labels, slow_s), (normal_labels, normal_s) = await asyncio.gather(
        _timed_group(slow_request, SLOW), normal_later()
    )

    assert slow_s < 4.0 + 1.0
    assert slow_labels == list(range(len(SLOW)))  # every unfinished answer is its own class
    slow = slow_request.tally
    assert slow.deadline_reached and slow.timeouts >= 1
    assert slow.checks <= 2  # one worker at a time, each check until its 3 s timeout

    assert normal_labels == NORMAL_CLASSES  # fully graded
    assert normal_s < TIMEOUT_S  # it never waited for a slow check to time out
    assert not normal_request.tally.deadline_reached and normal_request.tally.timeouts == 0


async def test_without_a_request_share_the_slow_answers_queue_ahead_of_others(pool):
    """The same two requests, the slow one on the shared grader (no per-request cap):
    its eight checks fill the pool's queue, and the normal request runs out of its own
    deadline before its answers are graded. This is what the share prevents."""
    normal_request = pool.for_request(4.0)
    slow = asyncio.create_task(pool.group(SLOW))
    await asyncio.sleep(0.3)
    labels = await normal_request.group(NORMAL)
    assert labels != NORMAL_CLASSES and normal_request.tally.deadline_reached
    slow.cancel()


async def test_an_answer_whose_check_timed_out_is_never_checked_again(pool):
    first = pool.for_request(10.0)
    await first.group([SLOW[0], "5"])
    assert first.tally.timeouts == 1

    again = pool.for_request(10.0)
    labels, seconds = await _timed_group(again, [SLOW[0], "5", SLOW[0]])
    assert labels == [0, 1, 0]  # its own class, by its string
    assert again.tally.checks == again.tally.timeouts == 0
    assert seconds < 0.5


async def test_once_the_deadline_is_spent_answers_are_grouped_by_what_is_known(pool):
    earlier = pool.for_request(10.0)
    assert await earlier.group(["5", "5.0", "\\frac{10}{2}"]) == [0, 0, 0]  # keys now cached

    request = pool.for_request(1e-6)  # out of grading time before any check could start
    labels = await request.group(["5", "\\frac{10}{2}", "\\frac{15}{3}", "5"])
    assert labels == [0, 0, 1, 0]  # known keys still agree; the new spelling stands alone
    assert request.tally.deadline_reached
    await asyncio.sleep(0.2)  # the check that wanted \frac{15}{3} gives up without running
    assert request.tally.skipped == 1 and request.tally.checks == 0


# --- through the server: evidence and metrics -------------------------------------------

HALF = ["\\frac{1}{2}", "0.5", "1/2", "2", "\\frac{2}{4}", "3"]


def _answers_by_prompt(prompt: list[int], spec: SamplingSpec, index: int) -> Scripted:
    """Sample i (its seed, from seed 0) answers SLOW[i] when the question says "slow",
    else HALF[i]."""
    answers = SLOW if "slow" in "".join(map(chr, prompt)) else HALF
    return Scripted(f"So the answer is \\boxed{{{answers[spec.seed + index]}}}.")


async def test_through_the_server_the_slow_request_keeps_its_deadline_and_reports_it():
    engine = ScriptedEngine(_answers_by_prompt)
    settings = {"grading_timeout_s": 2.0, "grading_deadline_s": 4.0}
    async with serving_engine(engine, **settings) as url, httpx.AsyncClient(timeout=30) as http:

        async def ask(question: str, delay: float = 0.0):
            await asyncio.sleep(delay)
            body = {
                "model": "scripted",
                "messages": [{"role": "user", "content": question}],
                "seed": 0,
                "ttscale": {"strategy": "self_consistency", "params": {"n": 6}},
            }
            started = time.perf_counter()
            response = await http.post(f"{url}/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            return response.json()["ttscale"], time.perf_counter() - started

        (slow, slow_s), (normal, normal_s) = await asyncio.gather(
            ask("a slow one"), ask("a normal one", delay=0.3)
        )
        metrics = (await http.get(f"{url}/metrics")).text

    assert slow_s < 4.0 + 1.0
    assert len(slow["votes"]) == 6  # six unfinished answers, six classes of one
    assert slow["details"]["grading"]["deadline_reached"]
    assert slow["details"]["grading"]["timeouts"] >= 1

    assert normal_s < 2.0  # less than one slow check's timeout
    assert normal["votes"] == {"\\frac{1}{2}": 4.0, "2": 1.0, "3": 1.0}
    assert normal["details"]["grading"]["deadline_reached"] is False
    assert normal["details"]["grading"]["timeouts"] == 0

    assert _metric(metrics, "ttscale_grading_seconds_count") == 2
    assert _metric(metrics, "ttscale_grading_timeouts_total") >= 1
    assert _metric(metrics, "ttscale_grading_deadline_reached_total") == 1


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} is not in /metrics"
    return float(match.group(1))
