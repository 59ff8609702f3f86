"""Routing keys (which prompts a consistent-hash router keeps together) and the failover
rule (how long a remote call is tried again), without any server."""

from __future__ import annotations

import asyncio
import time

import pytest

from ttscale.engine.failover import Failover, TransientError, is_transient_status
from ttscale.engine.protocol import EngineError
from ttscale.engine.routing_keys import BLOCK_TOKENS, PrefixKeys, block_digests


def question(number: int, length: int = 70) -> list[int]:
    """A rendered chat prompt: a shared preamble, then a question of its own."""
    preamble = list(range(1000, 1030))
    return preamble + [5000 + number * 100 + i for i in range(length - len(preamble))]


def test_every_sample_of_one_prompt_gets_one_key():
    keys = PrefixKeys()
    assert len({keys.key(question(1)) for _ in range(8)}) == 1


def test_continuations_keep_their_roots_key():
    """Step search, particle filtering and the next chat turn extend the prompt."""
    keys = PrefixKeys()
    root = question(1)
    key = keys.key(root)
    step1 = [*root, 11, 12, 13]
    step2 = [*step1, *range(20, 60)]
    assert keys.key(step1) == key
    assert keys.key(step2) == key
    assert len(keys) == 1  # continuations are not roots of their own


def test_different_questions_of_equal_length_get_different_keys():
    """What the router cannot tell apart: it keys token-id prompts by their length."""
    keys = PrefixKeys()
    prompts = [question(i) for i in range(8)]
    assert {len(p) for p in prompts} == {70}
    assert len({keys.key(p) for p in prompts}) == 8


def test_a_shared_preamble_alone_does_not_tie_questions_together():
    keys = PrefixKeys()
    first, second = question(1), question(2)
    assert first[:30] == second[:30]
    assert keys.key(first) != keys.key(second)


def test_two_fronts_give_a_question_the_same_key():
    """Stateless fronts: a root's key is a digest of its tokens, not of a memory."""
    assert PrefixKeys().key(question(3)) == PrefixKeys().key(question(3))


def test_prompts_shorter_than_a_block_are_keyed_by_content():
    keys = PrefixKeys()
    short = list(range(BLOCK_TOKENS - 1))
    assert keys.key(short) == keys.key(list(short))
    assert keys.key(short) != keys.key([*short[:-1], 99])
    assert len(keys) == 0


def test_a_forgotten_root_makes_its_continuation_a_root_of_its_own():
    keys = PrefixKeys(capacity=2)
    root = question(1)
    key = keys.key(root)
    keys.key(question(2))
    keys.key(question(3))  # evicts question 1, the least recently used
    assert keys.key([*root, *range(40)]) != key


def test_block_digests_chain_so_a_change_early_changes_every_later_digest():
    tokens = list(range(64))
    changed = [999, *tokens[1:]]
    assert len(block_digests(tokens)) == 64 // BLOCK_TOKENS
    assert not set(block_digests(tokens)) & set(block_digests(changed))


@pytest.mark.parametrize(
    ("status", "transient"), [(500, True), (502, True), (503, True), (429, True), (408, True),
                              (400, False), (404, False), (401, False)],
)  # fmt: skip
def test_transient_statuses(status, transient):
    assert is_transient_status(status) is transient


async def test_transient_failures_are_retried_until_one_succeeds():
    attempts: list[int] = []

    async def attempt(number: int) -> str:
        attempts.append(number)
        if number < 2:
            raise TransientError("replica went away")
        return "done"

    policy = Failover(give_up_after_s=5.0, first_backoff_s=0.01)
    assert await policy.run(attempt, "sample") == "done"
    assert attempts == [0, 1, 2]


async def test_a_request_error_is_not_retried():
    attempts: list[int] = []

    async def attempt(number: int) -> None:
        attempts.append(number)
        raise EngineError("HTTP 400: prompt too long")

    with pytest.raises(EngineError, match="prompt too long"):
        await Failover(first_backoff_s=0.01).run(attempt, "sample")
    assert attempts == [0]


async def test_giving_up_is_bounded_in_time_and_says_why():
    async def attempt(number: int) -> None:
        raise TransientError("no healthy worker")

    policy = Failover(give_up_after_s=0.5, first_backoff_s=0.05, max_backoff_s=0.1)
    started = time.monotonic()
    with pytest.raises(EngineError, match=r"gave up after \d+ attempts .*no healthy worker"):
        await policy.run(attempt, "sample x")
    assert 0.3 <= time.monotonic() - started <= 1.0


async def test_the_time_limit_counts_from_the_first_failure():
    """A long sample that loses its replica late still gets its retry."""
    attempts: list[int] = []

    async def attempt(number: int) -> str:
        attempts.append(number)
        if number == 0:
            await asyncio.sleep(0.3)  # longer than the limit, then the replica dies
            raise TransientError("stream broke")
        return "done"

    policy = Failover(give_up_after_s=0.2, first_backoff_s=0.01)
    assert await policy.run(attempt, "sample") == "done"
    assert attempts == [0, 1]
