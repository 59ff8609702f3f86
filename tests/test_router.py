"""Scale-out through real processes: two vLLM replicas of the tiny model behind the real
vllm-router (the Rust router in the `vllm-router` wheel, `consistent_hash` policy), and
`ttscale serve --engine remote` in front of the router.

The replicas and the router are started once for the module; the tests that kill
replicas come last, in file order, because they end the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from ttscale.engine.failover import Failover
from ttscale.engine.remote import RemoteVLLMEngine
from ttscale.engine.types import SamplingSpec
from ttscale.server.app import create_app
from ttscale.server.config import Settings

from .support.cluster import Cluster, Member, local_cluster
from .support.servers import free_port, wait_for_http

NAME = "tiny-routed"
QUESTION = [{"role": "user", "content": "What is 7 + 5? Put the answer in \\boxed{}."}]
TTSCALE = [sys.executable, "-m", "ttscale.cli"]
LONG = 6000
"""Tokens of a sample that must still be running when a test acts on it. The tiny model
makes several hundred a second per stream, and on two cores the first bytes of a stream
can come seconds late; 6,000 tokens outlast that."""


@pytest.fixture(scope="module")
def cluster(
    tiny_model_path: Path, starts_vllm, subprocess_env, tmp_path_factory
) -> Iterator[Cluster]:
    log_dir = tmp_path_factory.mktemp("cluster")
    # the tiny model declares 2,048 positions; its random weights do not mind more, and
    # samples that must still run when a test acts on them need more (see LONG)
    env = {**subprocess_env, "VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"}
    with local_cluster(
        tiny_model_path, 2, log_dir, name=NAME, env=env, max_model_len=8192
    ) as running:
        yield running


@pytest.fixture(scope="module")
def front(cluster: Cluster, subprocess_env, tmp_path_factory) -> Iterator[Member]:
    """`ttscale serve --engine remote --remote-url ROUTER`, a process of its own."""
    port = free_port()
    log = tmp_path_factory.mktemp("front") / "front.log"
    # at debug level the front logs when each replica stream starts (`_streams_started`)
    command = [*TTSCALE, "serve", "--engine", "remote", "--remote-url", cluster.router.url,
               "--port", str(port), "--log-level", "debug"]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=subprocess_env
        )
    member = Member("front", f"http://127.0.0.1:{port}", process, log)
    try:
        wait_for_http(f"{member.url}/health", process, 120, log)
        yield member
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        if process.poll() is None:
            process.kill()


@pytest.fixture(scope="module")
async def routed(cluster: Cluster) -> AsyncIterator[RemoteVLLMEngine]:
    """The remote adapter pointed at the router, as `ttscale serve` builds it."""
    engine = await RemoteVLLMEngine.connect([cluster.router.url])
    yield engine
    await engine.close()


def _metric(text: str, name: str, label: str) -> dict[str, float]:
    """Values of one Prometheus metric by the value of one of its labels (summed)."""
    values: dict[str, float] = {}
    pattern = re.compile(rf"^{re.escape(name)}\{{([^}}]*)\}} ([0-9.e+-]+)$", re.M)
    for labels, value in pattern.findall(text):
        key = re.search(rf'{label}="([^"]*)"', labels)
        if key:
            values[key.group(1)] = values.get(key.group(1), 0.0) + float(value)
    return values


async def routed_counts(cluster: Cluster) -> dict[str, float]:
    """Requests the router has sent to each replica (its policy's decisions), by URL."""
    text = (await asyncio.to_thread(httpx.get, cluster.router_metrics_url)).text
    counts = _metric(text, "vllm_router_policy_decisions_total", "worker")
    return {m.url: counts.get(m.url, 0.0) for m in cluster.replicas}


async def replica_metric(replica: Member, name: str) -> float:
    text = (await asyncio.to_thread(httpx.get, f"{replica.url}/metrics", timeout=5)).text
    return sum(_metric(text, name, "engine").values())


async def running_on(replica: Member) -> float:
    return await replica_metric(replica, "vllm:num_requests_running")


async def generated_tokens(cluster: Cluster) -> float:
    alive = [r for r in cluster.replicas if r.process.poll() is None]
    return sum([await replica_metric(r, "vllm:generation_tokens_total") for r in alive])


async def delta(cluster: Cluster, before: dict[str, float], total: int) -> list[float]:
    """Requests routed to each replica since `before`, once all `total` are counted:
    vllm-router counts a decision when its request ends, a moment after the reply."""
    deadline = time.monotonic() + 10
    while True:
        after = await routed_counts(cluster)
        grown = [after[url] - before[url] for url in before]
        if sum(grown) >= total or time.monotonic() > deadline:
            return grown
        await asyncio.sleep(0.1)


def test_two_remote_urls_are_refused_with_a_pointer_to_the_router(subprocess_env):
    result = subprocess.run(
        [*TTSCALE, "serve", "--engine", "remote", "--remote-url", "http://a:1",
         "--remote-url", "http://b:2", "--port", str(free_port())],
        capture_output=True, text=True, timeout=120, env=subprocess_env,
    )  # fmt: skip
    assert result.returncode == 2
    assert "vllm-router in front of several replicas" in result.stderr


async def test_the_adapter_works_unchanged_through_the_router(routed, cluster):
    """Chat rendering, tokenize/detokenize, streamed samples with logprobs: the same
    tokens as from a replica directly (greedy, float32)."""
    prompt = await routed.render_chat(QUESTION)
    assert await routed.detokenize(await routed.tokenize("Paris is nice.")) == "Paris is nice."
    spec = SamplingSpec(temperature=0.0, max_tokens=12, logprobs=5)
    through_router = (await routed.generate(prompt, spec, n=2)).samples
    direct = await RemoteVLLMEngine.connect([cluster.replicas[0].url])
    try:
        alone = (await direct.generate(prompt, spec)).samples[0]
    finally:
        await direct.close()
    for sample in through_router:
        assert sample.token_ids == alone.token_ids
        assert sample.num_tokens == 12 and sample.finish_reason == "length"
        assert len(sample.token_entropies) == len(sample.token_logprobs) == 12
    stats = await routed.stats()  # scraped from the workers the router reports
    assert stats.prefix_cache_queries > 0


async def test_same_prefix_samples_land_on_one_replica_when_keyed(routed, cluster):
    """All samples of one prompt, and the steps that continue it, on one replica."""
    prompt = await routed.render_chat(QUESTION)
    spec = SamplingSpec(temperature=0.8, max_tokens=8)
    before = await routed_counts(cluster)
    samples = (await routed.generate(prompt, spec, n=6)).samples
    for step in range(3):  # a step search: each step continues the previous one
        prompt = prompt + samples[step].token_ids
        await routed.generate(prompt, spec, n=2)
    assert sorted(await delta(cluster, before, 12)) == [0, 12]


async def test_different_prompts_spread_when_keyed_and_pile_up_when_not(routed, cluster):
    """Without a key the router hashes token-id prompts by length: sixteen different
    questions of one length all go to one replica. With keys they spread (all sixteen
    on one of two replicas: a chance of 1 in 32768)."""
    prompts = [[1000 + i] * 8 + list(range(2000, 2040)) for i in range(16)]
    spec = SamplingSpec(temperature=0.8, max_tokens=4)
    unkeyed = RemoteVLLMEngine([cluster.router.url], routed.info, routing_keys=False)
    try:
        before = await routed_counts(cluster)
        await asyncio.gather(*(unkeyed.generate(p, spec) for p in prompts))
        assert sorted(await delta(cluster, before, 16)) == [0, 16]
    finally:
        await unkeyed.close()
    before = await routed_counts(cluster)
    await asyncio.gather(*(routed.generate(p, spec) for p in prompts))
    assert min(await delta(cluster, before, 16)) >= 1


async def test_aborting_through_the_router_stops_the_replica(routed, cluster, caplog):
    caplog.set_level(logging.DEBUG, logger="ttscale.engine.remote")
    prompt = await routed.render_chat(QUESTION)
    spec = SamplingSpec(max_tokens=LONG, ignore_eos=True)
    before = await generated_tokens(cluster)
    caplog.clear()
    generation = routed.generate(prompt, spec, n=2)
    await _streams_started(lambda: caplog.text)
    result = await generation.abort()
    assert [s.finish_reason for s in result.samples] == ["abort", "abort"]
    # what each had streamed (how much depends on the machine's load: zero is possible)
    assert all(s.num_tokens < LONG for s in result.samples)
    assert await _all_idle(cluster, within_s=30)
    assert await generated_tokens(cluster) - before < 2 * LONG / 2


async def _streams_started(log_text: Callable[[], str]) -> None:
    """Wait until a replica stream answers, as the engine adapter logs it.

    The adapter's own log, not the replicas': a tiny model generating on two cores keeps
    vLLM's API server so busy that its /metrics (and the router's) can take as long to
    answer as the generation itself. And the router may hold a stream's first bytes
    back for seconds under load, so a fixed pause can fall before any stream starts.
    """
    deadline = time.monotonic() + 60
    while ": streaming from " not in log_text():
        assert time.monotonic() < deadline, "no replica stream started within 60 s"
        await asyncio.sleep(0.05)


def _log_after(member: Member) -> Callable[[], str]:
    """What `member` logs from now on."""
    start = member.log.stat().st_size

    def text() -> str:
        with member.log.open("rb") as log:
            log.seek(start)
            return log.read().decode(errors="replace")

    return text


async def _all_idle(cluster: Cluster, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if sum([await running_on(r) for r in cluster.replicas if r.process.poll() is None]) == 0:
            return True
        await asyncio.sleep(0.2)
    return False


def _tts_body(max_tokens: int, n: int = 4, stream: bool = False) -> dict:
    return {
        "model": NAME,
        "messages": QUESTION,
        "max_tokens": max_tokens,
        "stream": stream,
        "ttscale": {"strategy": "self_consistency", "params": {"n": n}},
    }


async def test_a_tts_request_completes_through_front_and_router(front):
    async with httpx.AsyncClient(base_url=front.url, timeout=120) as client:
        reply = await client.post("/v1/chat/completions", json=_tts_body(16))
        assert reply.status_code == 200, reply.text
        evidence = reply.json()["ttscale"]
        assert len(evidence["candidates"]) == 4
        assert reply.json()["usage"]["completion_tokens"] == 4 * 16
        streamed = _tts_body(8, stream=True)
        async with client.stream("POST", "/v1/chat/completions", json=streamed) as r:
            lines = [line async for line in r.aiter_lines() if line.startswith("data:")]
        assert r.status_code == 200 and lines[-1] == "data: [DONE]"


async def test_a_client_that_goes_away_frees_the_replicas(front, cluster):
    """Disconnect -> the front aborts its samples -> the router closes the replica's
    stream -> vLLM aborts: the samples stop short of the 4 x LONG tokens asked for, and
    after the front has closed its streams the replicas make less than half of that."""
    before = await generated_tokens(cluster)
    async with httpx.AsyncClient(base_url=front.url, timeout=120) as client:
        front_log = _log_after(front)
        request = asyncio.create_task(client.post("/v1/chat/completions", json=_tts_body(LONG)))
        await _streams_started(front_log)
        request.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await request
    assert await _all_idle(cluster, within_s=30)
    made = await generated_tokens(cluster) - before
    spent = re.search(r"cancelled by the client; .* samples_finished=(\d+) samples_aborted=(\d+)",
                      front_log())  # fmt: skip
    assert spent is not None and int(spent[2]) >= 1 and int(spent[1]) + int(spent[2]) == 4
    # run on, the samples would have made 4 x LONG (the tiny model never ends one early);
    # how many fewer depends on how soon the streams started and the abort got through,
    # which a loaded machine can delay by seconds: the front's bill says what reached it
    assert made < 4 * LONG
    billed = re.search(r"cancelled by the client; spent .*?\sgenerated_tokens=(\d+)", front_log())
    assert billed is not None and made - int(billed[1]) < 2 * LONG


async def _replica_of(client: httpx.AsyncClient, cluster: Cluster) -> Member:
    """The replica this test's question is routed to: its samples share one routing
    key, so a one-token request with the same question shows where they go (read off
    vLLM's token counters, which answer promptly while the replicas are idle)."""

    async def counts() -> list[float]:
        return [await replica_metric(r, "vllm:generation_tokens_total") for r in cluster.replicas]

    before = await counts()
    reply = await client.post("/v1/chat/completions", json=_tts_body(1))
    assert reply.status_code == 200, reply.text
    deadline = time.monotonic() + 10
    while sum(grown := [a - b for a, b in zip(await counts(), before, strict=True)]) < 4:
        assert time.monotonic() < deadline, f"replicas counted {grown} of 4 tokens"
        await asyncio.sleep(0.1)
    [busy] = [r for r, tokens in zip(cluster.replicas, grown, strict=True) if tokens == 4]
    return busy


async def test_killing_the_busy_replica_mid_request_retries_on_the_other(front, cluster):
    """SIGKILL of the replica running every sample of a request (process group, engine
    core included): the samples start again on the other replica and the request
    succeeds; the front stays healthy with one of two workers."""
    async with httpx.AsyncClient(base_url=front.url, timeout=300) as client:
        victim = await _replica_of(client, cluster)
        front_log = _log_after(front)
        request = asyncio.create_task(client.post("/v1/chat/completions", json=_tts_body(LONG)))
        await _streams_started(front_log)  # killed mid-stream: the front retries
        assert not request.done()
        victim.kill()
        victim.process.wait(timeout=10)
        killed_at = time.monotonic()
        reply = await request
        recovered_s = time.monotonic() - killed_at
        assert reply.status_code == 200, reply.text
        candidates = reply.json()["ttscale"]["candidates"]
        assert [c["finish_reason"] for c in candidates] == ["length"] * 4
        assert recovered_s < 240
        assert (await client.get("/health")).status_code == 200
        ready = (await client.get(f"{cluster.router.url}/readiness")).json()
    assert ready["total_workers"] == 2
    assert "attempt 1 failed" in front_log()


async def test_losing_every_replica_fails_requests_with_503_in_bounded_time(front, cluster, caplog):
    """The last replica dies under an in-flight request: the request gets a 503 once
    failover gives up (3 s here, 30 s by default), and /health turns 503 once the router
    reports no healthy worker; `ttscale serve` then exits non-zero for its supervisor."""

    async def short_failover(settings: Settings) -> RemoteVLLMEngine:
        probe = await RemoteVLLMEngine.connect(settings.remote_urls)
        await probe.close()
        return RemoteVLLMEngine(
            settings.remote_urls, probe.info, failover=Failover(give_up_after_s=3.0)
        )

    app = create_app(
        Settings(engine="remote", remote_urls=[cluster.router.url]), open_engine_fn=short_failover
    )
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url="http://f", timeout=120) as c:
            while (await c.get("/health")).status_code != 200:
                await asyncio.sleep(0.05)
            [last] = [r for r in cluster.replicas if r.process.poll() is None]
            caplog.set_level(logging.DEBUG, logger="ttscale.engine.remote")
            caplog.clear()
            request = asyncio.create_task(c.post("/v1/chat/completions", json=_tts_body(LONG)))
            await _streams_started(lambda: caplog.text)
            assert not request.done()
            last.kill()
            last.process.wait(timeout=10)
            killed_at = time.monotonic()
            reply = await request
            assert reply.status_code == 503, reply.text
            assert reply.json()["error"]["code"] == "engine_unavailable"
            assert time.monotonic() - killed_at < 20
            while (await c.get("/health")).status_code != 503:
                assert time.monotonic() - killed_at < 30, "health still ok without workers"
                await asyncio.sleep(0.2)
    assert front.process.wait(timeout=60) == 1
    assert "engine died: router not ready" in front.log.read_text()
