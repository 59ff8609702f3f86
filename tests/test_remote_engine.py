"""The remote adapter against a real vLLM OpenAI server serving SmolLM2-135M-Instruct."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from transformers import AutoTokenizer

from ttscale.engine.confidence import LOW_CONFIDENCE
from ttscale.engine.parity import ParityReport, check_parity
from ttscale.engine.remote import CHUNK_TOKENS, RemoteVLLMEngine
from ttscale.engine.types import ConfidenceStop, SamplingSpec
from ttscale.server.app import create_app
from ttscale.server.config import Settings

from .support.servers import vllm_api_server

SERVED_NAME = "smollm2-remote"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def vllm_server(
    default_model_path: Path, starts_vllm, subprocess_env, tmp_path_factory
) -> Iterator[str]:
    args = [
        "--model",
        str(default_model_path),
        "--served-model-name",
        SERVED_NAME,
        "--max-model-len",
        "2048",
        "--enable-prompt-tokens-details",
        "--enable-prefix-caching",
        "--dtype",
        "float32",  # content assertions stand on float32, checked below against transformers
        "--no-enable-chunked-prefill",  # as docs/deployment.md says for CPU servers
    ]
    with vllm_api_server(args, subprocess_env, tmp_path_factory.mktemp("vllm")) as url:
        yield url


@pytest.fixture(scope="module")
async def remote(vllm_server) -> AsyncIterator[RemoteVLLMEngine]:
    engine = await RemoteVLLMEngine.connect([vllm_server])
    yield engine
    await engine.close()


@pytest.fixture(scope="module")
async def parity(remote, default_model_path) -> ParityReport:
    return await check_parity(remote, default_model_path)


@pytest.fixture
def trusted_numerics(parity: ParityReport) -> None:
    """Content assertions fail with the numerics report, not an obscure mismatch, on a
    machine where the engine does not compute what the model means."""
    if not parity.ok:
        pytest.fail("the engine's numerics differ from transformers here:\n" + parity.describe())


async def test_engine_numerics_match_transformers(parity: ParityReport):
    """Greedy SmolLM2 tokens served by vLLM (float32) are transformers' first choices."""
    assert [p.agreed for p in parity.prompts] == [p.tokens for p in parity.prompts], (
        parity.describe()
    )
    assert all(p.tokens == 16 for p in parity.prompts)


async def _server_metric(url: str, name: str) -> float:
    text = (await asyncio.to_thread(httpx.get, f"{url}/metrics")).text
    match = re.search(rf"^vllm:{name}\{{[^}}]*\}} ([0-9.]+)", text, re.MULTILINE)
    assert match, f"vLLM metrics no longer expose {name}"
    return float(match.group(1))


async def _running_on_server(url: str) -> float:
    return await _server_metric(url, "num_requests_running")


async def test_connect_reads_what_the_server_serves(remote):
    assert remote.info.model_name == SERVED_NAME
    assert remote.info.max_model_len == 2048
    assert remote.info.backend == "vllm-remote"


async def test_chat_template_matches_the_model_tokenizer(remote, default_model_path):
    tokenizer = AutoTokenizer.from_pretrained(default_model_path)
    expected = tokenizer.encode(
        tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False),
        add_special_tokens=False,
    )
    assert await remote.render_chat(QUESTION) == expected
    assert await remote.detokenize(await remote.tokenize("Paris is nice.")) == "Paris is nice."


async def test_real_smollm2_answers_through_the_remote_adapter(remote, trusted_numerics):
    prompt = await remote.render_chat(QUESTION)
    result = await remote.generate(prompt, SamplingSpec(temperature=0.0, max_tokens=24))
    sample = result.samples[0]
    assert "Paris" in sample.text
    assert sample.finish_reason == "stop"
    assert sample.prompt_tokens == len(prompt)
    # token ids end with the end-of-turn token, which the text leaves out
    assert await remote.detokenize(sample.token_ids) == sample.text + "<|im_end|>"


async def test_samples_carry_entropies_and_cache_hits(remote):
    # long enough to fill whole KV blocks, which is what the prefix cache stores
    context = "Geography notes. " + " ".join(f"City {i} is in country {i % 7}." for i in range(80))
    prompt = await remote.render_chat([{"role": "system", "content": context}, *QUESTION])
    assert len(prompt) > 512
    spec = SamplingSpec(temperature=0.8, max_tokens=16, seed=5, logprobs=20)
    first = await remote.generate(prompt, spec, n=3)
    again = await remote.generate(prompt, spec, n=3)
    assert [s.token_ids for s in first.samples] == [s.token_ids for s in again.samples]
    for sample in first.samples:
        assert len(sample.token_entropies) == sample.num_tokens == len(sample.token_logprobs)
        assert all(0.0 <= h <= math.log(20) + 1e-6 for h in sample.token_entropies)
    assert any(s.cached_prompt_tokens > 0 for s in again.samples)


async def test_samples_reuse_connections_to_the_server(vllm_server, remote, caplog):
    """A sample's stream is read to its end, so its connection goes back to the pool:
    a new TCP connection per sample costs every sample a connect on both sides."""
    prompt = await remote.render_chat(QUESTION)
    caplog.set_level(logging.DEBUG, logger="ttscale.engine.remote")
    fresh = RemoteVLLMEngine([vllm_server], remote.info)
    try:
        caplog.clear()
        await fresh.generate(prompt, SamplingSpec(max_tokens=4))
        assert "opened a connection" in caplog.text  # the first sample needs one
        caplog.clear()
        for _ in range(3):
            await fresh.generate(prompt, SamplingSpec(max_tokens=4))
        assert "opened a connection" not in caplog.text
    finally:
        await fresh.close()


async def test_stop_string_kept(remote, trusted_numerics):
    prompt = await remote.render_chat(QUESTION)
    spec = SamplingSpec(
        temperature=0.0, max_tokens=24, stop=(" of",), include_stop_str_in_output=True
    )
    sample = (await remote.generate(prompt, spec)).samples[0]
    assert sample.finish_reason == "stop" and sample.stop_reason == " of"
    assert sample.text.endswith(" of")


async def test_abort_reports_partial_tokens_and_frees_the_server(remote, vllm_server):
    """An aborted sample is billed what reached the front: samples stream in chunks of
    CHUNK_TOKENS, so at most CHUNK_TOKENS - 1 of its tokens go unbilled."""
    prompt = await remote.render_chat(QUESTION)
    before = await _server_metric(vllm_server, "generation_tokens_total")
    generation = remote.generate(
        prompt, SamplingSpec(max_tokens=1500, ignore_eos=True, seed=1), n=2
    )
    await asyncio.sleep(3)
    result = await generation.abort()
    assert [s.finish_reason for s in result.samples] == ["abort", "abort"]
    assert all(0 < s.num_tokens < 1500 for s in result.samples)
    assert await remote.num_running() == 0
    for _ in range(50):
        if await _running_on_server(vllm_server) == 0:
            break
        await asyncio.sleep(0.1)
    assert await _running_on_server(vllm_server) == 0
    generated = await _server_metric(vllm_server, "generation_tokens_total") - before
    billed = sum(s.num_tokens for s in result.samples)
    assert billed <= generated <= billed + 2 * (CHUNK_TOKENS - 1)


async def test_ttscale_server_can_front_a_remote_vllm(vllm_server, trusted_numerics):
    settings = Settings(engine="remote", remote_urls=[vllm_server])
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url="http://ttscale") as client:
            while (await client.get("/health")).status_code != 200:
                await asyncio.sleep(0.05)
            response = await client.post(
                "/v1/chat/completions",
                json={
                    "model": SERVED_NAME,
                    "messages": QUESTION,
                    "temperature": 0,
                    "max_tokens": 24,
                },
            )
    assert response.status_code == 200, response.text
    assert "Paris" in response.json()["choices"][0]["message"]["content"]


async def test_connect_learns_the_servers_vocabulary(remote, default_model_path):
    """The bound vLLM itself enforces: the largest id of the model's vocabulary."""
    config = json.loads((default_model_path / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(default_model_path)
    assert remote.info.max_token_id == max(config["vocab_size"], len(tokenizer)) - 1


async def test_a_prompt_id_outside_the_remote_vocabulary_is_a_400(vllm_server, remote):
    app = create_app(Settings(engine="remote", remote_urls=[vllm_server]))
    transport = httpx.ASGITransport(app=app)
    top = remote.info.max_token_id
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url="http://ttscale") as client:
            while (await client.get("/health")).status_code != 200:
                await asyncio.sleep(0.05)
            body = {"model": SERVED_NAME, "max_tokens": 2}
            outside = await client.post("/v1/completions", json={**body, "prompt": [5, top + 1]})
            inside = await client.post("/v1/completions", json={**body, "prompt": [5, top]})
    assert outside.status_code == 400, outside.text
    error = outside.json()["error"]
    assert error["param"] == "prompt" and f"token id {top + 1}" in error["message"]
    assert inside.status_code == 200, inside.text


async def test_judge_through_the_remote_adapter(remote, trusted_numerics):
    """label logprobs travel over HTTP (`logprob_token_ids`, token ids as keys)."""
    from ttscale.verifiers.judge import LLMJudge

    judge = LLMJudge(remote)
    right = await judge.score_solution("What is the capital of France?", "Paris.")
    wrong = await judge.score_solution("What is the capital of France?", "Berlin.")
    for verdict in (right, wrong):
        assert 0.0 < verdict.score < 1.0
        assert verdict.p_yes > 0.0 and verdict.p_no > 0.0
        assert verdict.usage.generated_tokens == 1
    assert right.score != wrong.score


async def test_confidence_stop_closes_the_stream_and_vllm_aborts(remote, vllm_server):
    """DeepConf's online stop through HTTP: a bar above any confidence stops the sample at
    its first full window (the server stops too); a bar of -inf never stops it."""
    prompt = await remote.render_chat(QUESTION)

    def spec(threshold: float, max_tokens: int) -> SamplingSpec:
        stop = ConfidenceStop(window=4, threshold=threshold)
        return SamplingSpec(
            max_tokens=max_tokens, ignore_eos=True, seed=2, logprobs=5, confidence_stop=stop
        )

    stopped = (await remote.generate(prompt, spec(1e9, 1500))).samples[0]
    assert stopped.finish_reason == "abort" and stopped.stop_reason == LOW_CONFIDENCE
    assert 4 <= stopped.num_tokens < 1500
    assert len(stopped.token_confidences) == stopped.num_tokens
    for _ in range(50):
        if await _running_on_server(vllm_server) == 0:
            break
        await asyncio.sleep(0.1)
    assert await _running_on_server(vllm_server) == 0
    full = (await remote.generate(prompt, spec(-math.inf, 12))).samples[0]
    assert full.finish_reason == "length" and full.num_tokens == 12
    assert len(full.token_confidences) == 12 and all(c > 0 for c in full.token_confidences)


async def test_with_the_model_directory_chat_is_rendered_locally_as_the_server_would(
    vllm_server, default_model_path, caplog
):
    """`--model DIR` in remote mode: the front renders chat prompts itself (no /tokenize
    round trip per request), after checking at connect that it renders as the server."""
    local = await RemoteVLLMEngine.connect([vllm_server], model_path=str(default_model_path))
    served = await RemoteVLLMEngine.connect([vllm_server])
    try:
        caplog.set_level(logging.DEBUG, logger="ttscale.engine.remote")
        caplog.clear()
        conversation = [{"role": "system", "content": "Be brief."}, *QUESTION]
        ours = await local.render_chat(conversation)
        assert "/tokenize" not in caplog.text
        theirs = await served.render_chat(conversation)
        assert "POST /tokenize" in caplog.text  # the round trip the local rendering saves
        assert ours == theirs
    finally:
        await local.close()
        await served.close()


async def test_a_template_that_renders_differently_is_not_used(
    vllm_server, default_model_path, tmp_path, caplog
):
    """A local tokenizer whose chat template differs from the server's would change every
    prompt: the probe at connect notices, and rendering stays with the server."""
    other = tmp_path / "other-template"
    other.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(default_model_path / name, other / name)
    template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    (other / "chat_template.jinja").write_text(template)
    engine = await RemoteVLLMEngine.connect([vllm_server], model_path=str(other))
    try:
        assert "renders differently from the server's" in caplog.text
        caplog.set_level(logging.DEBUG, logger="ttscale.engine.remote")
        caplog.clear()
        tokenizer = AutoTokenizer.from_pretrained(default_model_path)
        expected = tokenizer.encode(
            tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False),
            add_special_tokens=False,
        )
        assert await engine.render_chat(QUESTION) == expected
        assert "POST /tokenize" in caplog.text  # rendered by the server, not locally
    finally:
        await engine.close()


def test_only_samples_under_a_confidence_watch_stream_every_token():
    """Unwatched samples ask vLLM for chunks (fewer SSE events); the watch needs each token."""
    from ttscale.engine.remote import _completion_body

    plain = _completion_body("m", [1, 2], SamplingSpec(max_tokens=4), 0)
    watch = ConfidenceStop(window=4, threshold=1.0)
    watched = _completion_body("m", [1, 2], SamplingSpec(logprobs=5, confidence_stop=watch), 0)
    assert plain["stream_interval"] == CHUNK_TOKENS > 1
    assert "stream_interval" not in watched
