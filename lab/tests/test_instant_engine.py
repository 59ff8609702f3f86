"""The instant engines say what a model would, through the product's own adapters: the
in-process one under `LocalVLLMEngine`, the stand-in server under `RemoteVLLMEngine`,
the same sample for the same seed either way. No vLLM engine starts, but vLLM's classes
are imported, and importing vLLM runs a program (`file`, through `platform`): those
tests take `subprocess_env`, so they run in `make test`, not in the fast lane."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from lab.instant_engine import instant_engine
from lab.instant_material import TOP_K, Material
from lab.instant_vllm import build_app
from ttscale.engine.entropy import topk_entropy
from ttscale.engine.local_tokenizer import load_tokenizer
from ttscale.engine.model_store import ensure_default_model
from ttscale.engine.remote import RemoteVLLMEngine
from ttscale.engine.types import ConfidenceStop, SamplingSpec

CHAT = [{"role": "user", "content": "How many apples are left?"}]


@pytest.fixture(scope="module")
def model() -> Path:
    return ensure_default_model()


@pytest.fixture(scope="module")
def material(model: Path) -> Material:
    return Material(load_tokenizer(model), traces=8)


def test_a_plan_ends_in_its_answer_or_at_a_stop_string(material: Material):
    plan = material.plan(0, 300)
    assert len(plan.token_ids) == len(plan.pieces) == len(plan.levels) == 300
    assert plan.finish_reason == "stop" and plan.stop_reason is None
    assert plan.text.endswith(f"\\boxed{{{plan.answer}}}.")
    step = material.plan(0, 300, ("\n\n",))
    assert step.stop_reason == "\n\n" and step.text.endswith("\n\n")
    assert step.text.count("\n\n") == 1 and len(step.token_ids) < 300
    assert material.plan(0, 2).finish_reason == "length"  # no room for the answer


def test_a_position_is_the_sampled_token_then_the_top_k_by_rank(material: Material):
    entries = material.position(42, 3, TOP_K)
    assert [rank for _, _, rank in entries] == list(range(1, TOP_K + 1))
    assert entries[0][0] == 42 and 42 not in [t for t, _, _ in entries[1:]]
    values = [lp for _, lp, _ in entries]
    assert values == sorted(values, reverse=True)
    peaked = topk_entropy([lp for _, lp, _ in material.position(42, 0, TOP_K)])
    assert (
        peaked
        < topk_entropy(values[:])
        < topk_entropy([lp for _, lp, _ in material.position(42, 15, TOP_K)])
    )


async def test_the_in_process_adapter_reads_the_instant_engine(
    model: Path, material: Material, subprocess_env: dict[str, str]
):
    engine = instant_engine(model, material=material)
    prompt = await engine.render_chat(CHAT)
    spec = SamplingSpec(max_tokens=256, logprobs=TOP_K, seed=3)
    result = await engine.generate(prompt, spec, n=4)
    for sample in result.samples:
        assert sample.num_tokens == 256 and sample.finish_reason == "stop"
        assert "\\boxed{" in sample.text
        assert len(sample.token_entropies) == len(sample.token_confidences) == 256
        assert all(e > 0 for e in sample.token_entropies)
    assert result.prompt_tokens == len(prompt)
    assert engine.vllm.generated_tokens == 4 * 256
    await engine.close()


async def test_the_confidence_watch_stops_doubtful_traces(
    model: Path, material: Material, subprocess_env: dict[str, str]
):
    """Every fourth trace turns unsure from its 128th token: watched, those stop there."""
    engine = instant_engine(model, material=material)
    prompt = await engine.render_chat(CHAT)
    watch = ConfidenceStop(window=32, threshold=5.0)
    spec = SamplingSpec(max_tokens=512, logprobs=TOP_K, confidence_stop=watch)
    samples = [s for seed in range(8) for s in (await engine.generate(
        prompt, spec.replace(seed=seed), n=2)).samples]  # fmt: skip
    stopped = [s for s in samples if s.stop_reason == "low_confidence"]
    assert 0 < len(stopped) < len(samples)
    assert all(s.finish_reason == "abort" and 128 < s.num_tokens < 512 for s in stopped)
    await engine.close()


@contextlib.asynccontextmanager
async def _served(app: web.Application) -> AsyncIterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_the_stand_in_server_streams_what_the_engine_makes(
    model: Path, material: Material, subprocess_env: dict[str, str]
):
    """The remote adapter reads the stand-in's SSE (vLLM's classes serialise it) into the
    samples the in-process engine gives for the same seeds."""
    local = instant_engine(model, material=material)
    prompt = await local.render_chat(CHAT)
    spec = SamplingSpec(max_tokens=100, logprobs=TOP_K, seed=11)
    async with _served(build_app(model, "instant", material)) as url:
        remote = await RemoteVLLMEngine.connect([url])
        try:
            over_http = await remote.generate(prompt, spec, n=3)
            steps = await remote.generate(prompt, spec.replace(stop=("\n\n",)), n=1)
        finally:
            await remote.close()
    in_process = await local.generate(prompt, spec, n=3)
    for got, want in zip(over_http.samples, in_process.samples, strict=True):
        assert got.token_ids == want.token_ids
        assert got.text == want.text and got.finish_reason == want.finish_reason
        assert got.token_entropies == pytest.approx(want.token_entropies, rel=1e-6)
        assert got.token_confidences == pytest.approx(want.token_confidences, rel=1e-6)
    assert steps.samples[0].stop_reason == "\n\n" and not steps.samples[0].text.endswith("\n\n")
    await local.close()
