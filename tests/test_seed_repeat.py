"""Whether a seed reproduces its sample alone and batched (reported by `ttscale doctor`).

Scripted engines stand for the two kinds of machine: one whose samples depend only on
their seed, one whose samples also depend on where they sit in a batch. Whether the real
engine repeats is the machine's and dtype's answer, so `test_parity.py` checks that doctor
reports it, not what it is.
"""

from __future__ import annotations

from ttscale.engine.seed_repeat import check_seed_repeat, first_divergence
from ttscale.engine.types import SamplingSpec

from .support.fakes import Scripted, ScriptedEngine


def _by_seed(prompt: list[int], spec: SamplingSpec, index: int) -> Scripted:
    return Scripted(text=f"s{spec.seed + index}")


def _by_seed_and_place(prompt: list[int], spec: SamplingSpec, index: int) -> Scripted:
    return Scripted(text=f"s{spec.seed + index}i{index}")


def test_first_divergence_is_the_first_differing_position_or_a_length():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 9, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2
    assert first_divergence([], []) is None


async def test_samples_that_depend_only_on_their_seed_repeat():
    report = await check_seed_repeat(ScriptedEngine(_by_seed), samples=4)
    assert report.divergence == [None] * 4 and report.ok
    assert report.describe().startswith("seeds: ok: 4 of 4 seeded samples came out alike")


async def test_samples_that_depend_on_their_place_in_the_batch_are_reported():
    report = await check_seed_repeat(ScriptedEngine(_by_seed_and_place), samples=4)
    # alone, every seed is index 0 of its call; batched only the first one is
    assert report.divergence == [None, 6, 6, 6] and not report.ok
    assert "1 of 4 seeded samples came out alike" in report.describe()
    assert "parted after 6, 6, 6 tokens" in report.describe()


async def test_the_check_draws_the_seeds_a_request_would_and_each_alone():
    engine = ScriptedEngine(_by_seed)
    await check_seed_repeat(engine, samples=3)
    seeds = [spec.seed for _, spec in engine.calls]
    assert seeds[:2] == [1234, 1234]  # the checked samples and the ones beside them
    assert seeds[2:] == [1234, 1235, 1236]  # then each seed alone
