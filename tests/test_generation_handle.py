"""The `Generation` handle's rules, pinned with a scripted engine."""

from __future__ import annotations

import asyncio

import pytest

from ttscale.engine.protocol import EngineError, Generation
from ttscale.engine.types import Sample, SamplingSpec

from .support.fakes import Scripted, ScriptedEngine


def durations(*seconds: float) -> ScriptedEngine:
    def script(prompt, spec, index):
        return Scripted(chr(ord("a") + index) * 10, seconds[index])

    return ScriptedEngine(script)


async def test_await_returns_samples_in_index_order():
    engine = durations(0.03, 0.01, 0.02)
    result = await engine.generate([1, 2], SamplingSpec(), n=3)
    assert [s.index for s in result.samples] == [0, 1, 2]
    assert [s.text[0] for s in result.samples] == ["a", "b", "c"]
    assert result.generated_tokens == 30
    assert result.prompt_tokens == 2


async def test_iteration_yields_samples_in_finishing_order():
    engine = durations(0.06, 0.01, 0.03)
    order = [s.index async for s in engine.generate([1], SamplingSpec(), n=3)]
    assert order == [1, 2, 0]


async def test_abort_keeps_finished_samples_and_marks_the_rest():
    engine = durations(0.01, 5.0, 5.0)
    generation = engine.generate([1], SamplingSpec(), n=3)
    first = await anext(aiter(generation))
    assert first.index == 0
    result = await generation.abort()
    assert [s.finish_reason for s in result.samples] == ["stop", "abort", "abort"]
    assert result.aborted == result.samples[1:]
    assert await engine.num_running() == 0


async def test_cancelled_waiter_aborts_instead_of_leaking():
    engine = durations(5.0, 5.0)
    generation = engine.generate([1], SamplingSpec(), n=2)
    waiter = asyncio.create_task(generation.result())
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert generation.done()
    assert await engine.num_running() == 0


async def test_breaking_out_of_iteration_and_closing_aborts():
    engine = durations(0.01, 5.0)
    generation = engine.generate([1], SamplingSpec(), n=2)
    iterator = aiter(generation)
    await anext(iterator)
    await iterator.aclose()
    assert generation.done()
    assert (await generation.result()).samples[1].finish_reason == "abort"


async def test_a_sample_that_ignores_abort_is_cancelled_and_reported_empty(monkeypatch):
    monkeypatch.setattr("ttscale.engine.protocol._ABORT_MAX_RETRIES", 2)
    monkeypatch.setattr("ttscale.engine.protocol._ABORT_RETRY_SECONDS", 0.01)

    async def stubborn(index: int) -> Sample:
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    async def ignore(indices) -> None:
        return None

    generation = Generation("stuck", 3, 1, stubborn, ignore)
    result = await asyncio.wait_for(generation.abort(), timeout=5)
    assert result.samples[0].finish_reason == "abort"
    assert result.samples[0].num_tokens == 0


async def test_engine_failure_surfaces_as_engine_error():
    async def broken(index: int) -> Sample:
        raise RuntimeError("engine died")

    async def ignore(indices) -> None:
        return None

    with pytest.raises(EngineError, match="1 of 1 samples failed"):
        await Generation("broken", 1, 1, broken, ignore)


async def test_sample_seeds_are_distinct_and_reproducible():
    spec = SamplingSpec(seed=10)
    assert [spec.sample_seed(i) for i in range(3)] == [10, 11, 12]
    assert SamplingSpec().sample_seed(1) is None
