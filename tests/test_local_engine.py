"""The in-process vLLM engine layer, exercised through real vLLM on the tiny model."""

from __future__ import annotations

import asyncio
import math

import pytest

from ttscale.engine.protocol import Engine
from ttscale.engine.types import SamplingSpec

CHAT = [{"role": "user", "content": "Count to ten."}]


async def test_engine_satisfies_the_protocol_and_reports_model_info(engine):
    assert isinstance(engine, Engine)
    info = engine.info
    assert info.backend == "vllm-local"
    assert info.max_model_len == 1024
    assert info.shape is not None
    assert info.shape.num_layers == 2 and info.shape.hidden_size == 128
    assert info.shape.head_dim == 64
    # embeddings (49152 x 128, tied) dominate the parameter count
    assert 6_000_000 < info.shape.num_params < 8_000_000


async def test_chat_is_rendered_with_the_models_own_template(engine):
    ids = await engine.render_chat(CHAT)
    text = await engine.tokenize("<|im_start|>user\nCount to ten.<|im_end|>")
    rendered = engine._tokenizer.decode(ids)
    assert rendered.startswith("<|im_start|>system\n")
    assert "<|im_start|>user\nCount to ten.<|im_end|>" in rendered
    assert rendered.endswith("<|im_start|>assistant\n")
    assert all(isinstance(i, int) for i in text)


async def test_generate_returns_n_samples_with_tokens_text_and_usage(engine):
    prompt = await engine.render_chat(CHAT)
    result = await engine.generate(
        prompt, SamplingSpec(temperature=1.0, max_tokens=12, seed=7), n=4
    )
    assert [s.index for s in result.samples] == [0, 1, 2, 3]
    assert result.prompt_tokens == len(prompt)
    for sample in result.samples:
        assert 1 <= sample.num_tokens <= 12
        assert sample.finish_reason in ("stop", "length")
        assert sample.prompt_tokens == len(prompt)
        assert sample.text == engine._tokenizer.decode(sample.token_ids, skip_special_tokens=True)
    assert result.generated_tokens == sum(s.num_tokens for s in result.samples)
    # four different seeds: the random model does not produce four identical samples
    assert len({tuple(s.token_ids) for s in result.samples}) > 1


async def test_same_seed_reproduces_samples(engine):
    prompt = await engine.render_chat(CHAT)
    spec = SamplingSpec(temperature=1.0, max_tokens=10, seed=1234)
    first = await engine.generate(prompt, spec, n=2)
    second = await engine.generate(prompt, spec, n=2)
    assert [s.token_ids for s in first.samples] == [s.token_ids for s in second.samples]


async def test_logprobs_give_one_entropy_per_token_within_log_k(engine):
    prompt = await engine.render_chat(CHAT)
    k = 5
    result = await engine.generate(
        prompt, SamplingSpec(temperature=1.0, max_tokens=8, seed=3, logprobs=k), n=2
    )
    for sample in result.samples:
        assert sample.token_entropies is not None and sample.token_logprobs is not None
        assert len(sample.token_entropies) == sample.num_tokens
        assert len(sample.token_logprobs) == sample.num_tokens
        assert all(0.0 <= h <= math.log(k) + 1e-6 for h in sample.token_entropies)
        assert all(lp <= 0.0 for lp in sample.token_logprobs)
    no_logprobs = await engine.generate(prompt, SamplingSpec(max_tokens=4, seed=3))
    assert no_logprobs.samples[0].token_entropies is None


async def test_greedy_continuation_from_token_ids_matches_one_shot(engine):
    """Step-level search continues from token ids: prompt + generated ids, no re-tokenising."""
    prompt = await engine.render_chat(CHAT)

    async def greedy(prefix: list[int], tokens: int):
        spec = SamplingSpec(temperature=0.0, max_tokens=tokens, ignore_eos=True)
        return (await engine.generate(prefix, spec)).samples[0]

    full = await greedy(prompt, 16)
    head = await greedy(prompt, 6)
    assert head.token_ids == full.token_ids[:6]
    tail = await greedy(prompt + head.token_ids, 10)
    assert head.token_ids + tail.token_ids == full.token_ids
    assert tail.prompt_tokens == len(prompt) + 6


async def test_stop_string_is_kept_when_asked(engine):
    prompt = await engine.render_chat(CHAT)
    probe = (
        await engine.generate(prompt, SamplingSpec(temperature=0.0, max_tokens=30, ignore_eos=True))
    ).samples[0]
    # choose a stop string that greedy decoding is known to produce
    stop = probe.text[len(probe.text) // 2 : len(probe.text) // 2 + 2]
    assume_text = probe.text[: probe.text.index(stop)]
    kept = (
        await engine.generate(
            prompt,
            SamplingSpec(
                temperature=0.0,
                max_tokens=30,
                ignore_eos=True,
                stop=(stop,),
                include_stop_str_in_output=True,
            ),
        )
    ).samples[0]
    assert kept.finish_reason == "stop" and kept.stop_reason == stop
    assert kept.text == assume_text + stop
    dropped = (
        await engine.generate(
            prompt, SamplingSpec(temperature=0.0, max_tokens=30, ignore_eos=True, stop=(stop,))
        )
    ).samples[0]
    assert dropped.text == assume_text


async def test_abort_reports_the_tokens_already_generated(engine):
    prompt = await engine.render_chat(CHAT)
    generation = engine.generate(
        prompt, SamplingSpec(temperature=1.0, max_tokens=900, ignore_eos=True, seed=5), n=3
    )
    while await engine.num_running() < 3:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
    result = await generation.abort()
    assert [s.finish_reason for s in result.samples] == ["abort"] * 3
    assert all(0 < s.num_tokens < 900 for s in result.samples)
    assert result.generated_tokens == sum(s.num_tokens for s in result.samples)
    assert await engine.num_running() == 0


async def test_samples_can_be_consumed_as_they_finish_and_the_rest_aborted(engine):
    prompt = await engine.render_chat(CHAT)
    short = engine.generate(prompt, SamplingSpec(max_tokens=4, ignore_eos=True, seed=1))
    long = engine.generate(prompt, SamplingSpec(max_tokens=900, ignore_eos=True, seed=2), n=2)
    first = await anext(aiter(short))
    assert first.finish_reason == "length" and first.num_tokens == 4
    result = await long.abort()
    assert all(s.finish_reason == "abort" for s in result.samples)
    assert await engine.num_running() == 0


async def test_cancelling_the_waiter_aborts_the_samples(engine):
    """A client that goes away must not leave samples running in the engine."""
    prompt = await engine.render_chat(CHAT)
    generation = engine.generate(prompt, SamplingSpec(max_tokens=900, ignore_eos=True), n=2)
    waiter = asyncio.create_task(generation.result())
    while await engine.num_running() < 2:
        await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert generation.done()
    assert await engine.num_running() == 0


async def test_concurrent_requests_run_together(engine):
    """Samples of concurrent requests share the engine (batched by vLLM's scheduler)."""
    prompt = await engine.render_chat(CHAT)
    spec = SamplingSpec(max_tokens=200, ignore_eos=True, seed=11)
    first = engine.generate(prompt, spec, n=2)
    second = engine.generate(prompt, spec, n=2)
    peak = 0
    while not (first.done() and second.done()):
        peak = max(peak, await engine.num_running())
        await asyncio.sleep(0.005)
    assert peak == 4
    a, b = await first, await second
    assert [s.token_ids for s in a.samples] == [s.token_ids for s in b.samples]


async def test_repeated_long_prompt_hits_the_prefix_cache(engine):
    context = " ".join(
        f"Fact {i}: the number {i} is {'even' if i % 2 == 0 else 'odd'}." for i in range(60)
    )
    prompt = await engine.render_chat([{"role": "system", "content": context}, *CHAT])
    assert len(prompt) > 512
    spec = SamplingSpec(max_tokens=2, seed=1)
    await engine.generate(prompt, spec)
    again = await engine.generate(prompt, spec)
    sample = again.samples[0]
    assert 0 < sample.cached_prompt_tokens <= len(prompt)
    assert sample.prompt_tokens == len(prompt)  # what was not cached was computed
