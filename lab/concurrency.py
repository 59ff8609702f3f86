"""ttscale against raw vLLM under concurrent load and for one plain request.

Throughput: C concurrent self-consistency requests of N samples each through the ttscale
HTTP server, against the same C x N samples sent straight to the same vLLM (C requests
with vLLM's own `n=N`). Latency: sequential plain chat completions (no strategy) through
ttscale against the same request straight to vLLM; the added latency is the difference
of the medians. Both sides run on one engine, rounds interleaved in ABBA order
so machine noise hits both alike: read the ratios, not the absolute figures.

- `--mode local`: ttscale serves an in-process engine; raw is the same `AsyncLLM` called
  directly (token ids in, `RequestOutputKind.FINAL_ONLY`).
- `--mode remote`: a vLLM OpenAI server in a subprocess; `ttscale serve --engine remote
  --model DIR` in another, as deployed; ttscale and raw HTTP requests (`/v1/completions`
  with token ids, `/v1/chat/completions`) share the vLLM server. The plain request also
  goes through the remote adapter alone, in this process, which splits the added latency
  into the adapter's path through vLLM and the front's HTTP server.
- `--mode stand-in`: as remote, with `stand_in_vllm` (answers at once) in place of vLLM:
  the plain request's added latency without the engine's compute, i.e. the front's own
  cost and one loopback hop (latency only: `--concurrency ""`).
- `--ours raw-per-sample` (remote): the throughput rounds set raw `n=N` requests against
  the same samples sent raw one request each, no ttscale: vLLM's own cost per request.

    .venv/bin/python -m lab.concurrency --mode local --concurrency 16,64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from lab.script_setup import model_to_measure, prepare_measurement
from lab.serving import serve_app, stand_in_server, ttscale_front, vllm_server
from ttscale.benchmarks.stats import Interval
from ttscale.engine.local_vllm import LocalVLLMEngine
from ttscale.engine.remote import RemoteVLLMEngine
from ttscale.engine.types import SamplingSpec

MESSAGES = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
Round = Callable[[int, int], Awaitable[int]]
"""(concurrency, round number) -> generated tokens."""
Plain = Callable[[], Awaitable[None]]
"""One plain chat completion, waited for."""


def median_ci(values: list[float], resamples: int = 2000, level: float = 0.95) -> Interval:
    """Median and percentile-bootstrap interval: for timings on a shared machine, where a
    few stalls would drag a mean."""
    if not values:
        return Interval(math.nan, math.nan, math.nan)
    data = np.asarray(values, dtype=float)
    rows = np.random.default_rng(0).integers(0, len(data), size=(resamples, len(data)))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(np.median(data[rows], axis=1), [tail, 100 - tail])
    return Interval(float(np.median(data)), float(low), float(high))


@dataclass
class Sides:
    """The two ways of sending the same work, and what a plain request looks like."""

    raw: Round
    ttscale: Round
    raw_plain: Plain
    ttscale_plain: Plain
    adapter_plain: Plain | None = None
    """Remote modes: the plain request through the remote adapter alone, in the measuring
    process (no ttscale HTTP server): splits the added latency into the front's HTTP
    server and the adapter's path through vLLM."""


def _strategy_body(model: str, n: int, tokens: int, seed: int) -> dict[str, Any]:
    sampling = {"temperature": 1.0, "max_tokens": tokens, "ignore_eos": True, "seed": seed}
    return {
        "model": model,
        "messages": MESSAGES,
        "ttscale": {"strategy": "self_consistency", "params": {"n": n, "sampling": sampling}},
    }


def _plain_body(model: str, tokens: int) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, "max_tokens": tokens, "temperature": 0.0}


async def _post(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(url, json=body, timeout=3600)
    response.raise_for_status()
    return response.json()


async def _completion_tokens(
    client: httpx.AsyncClient, url: str, bodies: list[dict[str, Any]]
) -> int:
    """Send `bodies` to `url` all at once; the completion tokens they generated."""
    done = await asyncio.gather(*(_post(client, url, body) for body in bodies))
    return sum(d["usage"]["completion_tokens"] for d in done)


def _ttscale_rounds(
    client: httpx.AsyncClient, url: str, model: str, n: int, tokens: int, plain_tokens: int
) -> tuple[Round, Plain]:
    async def many(concurrency: int, number: int) -> int:
        bodies = [_strategy_body(model, n, tokens, 1000 * number + i) for i in range(concurrency)]
        return await _completion_tokens(client, f"{url}/v1/chat/completions", bodies)

    async def plain() -> None:
        await _post(client, f"{url}/v1/chat/completions", _plain_body(model, plain_tokens))

    return many, plain


def _local_raw(
    engine: LocalVLLMEngine, prompt: list[int], n: int, tokens: int, plain_tokens: int
) -> tuple[Round, Plain]:
    from vllm import SamplingParams
    from vllm.inputs import tokens_input
    from vllm.sampling_params import RequestOutputKind

    final = RequestOutputKind.FINAL_ONLY

    async def one(params: Any, request_id: str) -> int:
        last = None
        async for out in engine.vllm.generate(tokens_input(prompt), params, request_id):
            last = out
        return sum(len(c.token_ids) for c in last.outputs)

    async def many(concurrency: int, number: int) -> int:
        params = [
            SamplingParams(n=n, temperature=1.0, max_tokens=tokens, ignore_eos=True,
                           seed=1000 * number + i, output_kind=final)
            for i in range(concurrency)
        ]  # fmt: skip
        done = await asyncio.gather(*(one(p, f"raw-{number}-{i}") for i, p in enumerate(params)))
        return sum(done)

    plain_params = SamplingParams(max_tokens=plain_tokens, temperature=0.0, output_kind=final)
    counter = iter(range(10**9))

    async def plain() -> None:  # what a chat request needs: render, generate, decode
        last = None
        rendered = tokens_input(await engine.render_chat(MESSAGES))
        async for out in engine.vllm.generate(rendered, plain_params, f"raw-{next(counter)}"):
            last = out
        await engine.detokenize(last.outputs[0].token_ids)

    return many, plain


def _remote_raw(
    client: httpx.AsyncClient,
    vllm_url: str,
    model: str,
    prompt: list[int],
    n: int,
    tokens: int,
    plain_tokens: int,
) -> tuple[Round, Plain]:
    async def many(concurrency: int, number: int) -> int:
        seeds = [1000 * number + i for i in range(concurrency)]
        bodies = [_raw_body(model, prompt, n, tokens, seed) for seed in seeds]
        return await _completion_tokens(client, f"{vllm_url}/v1/completions", bodies)

    async def plain() -> None:
        await _post(client, f"{vllm_url}/v1/chat/completions", _plain_body(model, plain_tokens))

    return many, plain


def _raw_body(model: str, prompt: list[int], n: int, tokens: int, seed: int) -> dict[str, Any]:
    """A raw `/v1/completions` request of `n` samples, each exactly `tokens` long."""
    return {"model": model, "prompt": prompt, "n": n, "max_tokens": tokens, "ignore_eos": True,
            "temperature": 1.0, "seed": seed}  # fmt: skip


def _raw_per_sample(
    client: httpx.AsyncClient, vllm_url: str, model: str, prompt: list[int], n: int, tokens: int
) -> Round:
    """The raw side's work, each sample its own `n=1` request seeded as vLLM seeds the
    children of an `n=N` request (`seed + i`), with as many tokens (`ignore_eos`): what
    vLLM's cost per request alone takes from throughput, with no front in the way."""

    async def many(concurrency: int, number: int) -> int:
        bodies = [
            _raw_body(model, prompt, 1, tokens, 1000 * number + i + j)
            for i in range(concurrency)
            for j in range(n)
        ]
        return await _completion_tokens(client, f"{vllm_url}/v1/completions", bodies)

    return many


def _client() -> httpx.AsyncClient:
    """The measuring client. httpx pools 100 connections unless told otherwise: with more
    requests in flight (512 at 64 x N=8, one per sample) the rest would queue in the
    client and the measurement would be of the queue."""
    unlimited = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    return httpx.AsyncClient(limits=unlimited, timeout=3600)


async def _timed(side: Round, concurrency: int, number: int) -> tuple[int, float]:
    """(tokens, tokens/s) of one round."""
    started = time.perf_counter()
    tokens = await side(concurrency, number)
    return tokens, tokens / (time.perf_counter() - started)


async def _throughput(sides: Sides, concurrency: int, reps: int) -> dict[str, Any]:
    """Interleaved round pairs, the side that goes first alternating (raw first in even
    pairs, ttscale first in odd ones) so that a drift of the machine within a pair does
    not favour one side; the ratio of each pair's ttscale rate to its raw rate."""
    ratios, raw_rates, ours_rates = [], [], []
    for rep in range(reps):
        if rep % 2 == 0:
            raw_tokens, raw_rate = await _timed(sides.raw, concurrency, 2 * rep)
            our_tokens, our_rate = await _timed(sides.ttscale, concurrency, 2 * rep + 1)
        else:
            our_tokens, our_rate = await _timed(sides.ttscale, concurrency, 2 * rep + 1)
            raw_tokens, raw_rate = await _timed(sides.raw, concurrency, 2 * rep)
        if our_tokens != raw_tokens:
            raise RuntimeError(f"unequal work: raw {raw_tokens} vs ttscale {our_tokens} tokens")
        raw_rates.append(raw_rate)
        ours_rates.append(our_rate)
        ratios.append(our_rate / raw_rate)
    return {
        "raw_tok_s": round(statistics.median(raw_rates), 1),
        "ttscale_tok_s": round(statistics.median(ours_rates), 1),
        "ratio_median": round(statistics.median(ratios), 3),
        "ratios": [round(r, 3) for r in ratios],
    }


async def _latency(sides: Sides, requests: int) -> dict[str, Any]:
    """Sequential plain requests, one raw and one through ttscale in each round (and one
    through the adapter alone where there is one), the order rotating from round to round.
    Besides the difference of the medians, the median of the rounds' differences: the
    requests of a round meet the same machine load, so it varies less from run to run
    than a difference of medians taken apart. Its bootstrap interval says whether a run
    resolves a target of a few ms at all."""
    timed: dict[str, Plain] = {"raw": sides.raw_plain, "ttscale": sides.ttscale_plain}
    if sides.adapter_plain is not None:
        timed["adapter"] = sides.adapter_plain
    orders = list(itertools.permutations(timed))
    took: dict[str, list[float]] = {name: [] for name in timed}
    for number in range(requests):
        for name in orders[number % len(orders)]:
            started = time.perf_counter()
            await timed[name]()
            took[name].append((time.perf_counter() - started) * 1e3)
    raw_ms, our_ms = statistics.median(took["raw"]), statistics.median(took["ttscale"])
    figures: dict[str, Any] = {
        "raw_p50_ms": round(raw_ms, 2),
        "ttscale_p50_ms": round(our_ms, 2),
        "added_p50_ms": round(our_ms - raw_ms, 2),
        **_paired("added", took["ttscale"], took["raw"]),
    }
    if "adapter" in took:
        figures["adapter_p50_ms"] = round(statistics.median(took["adapter"]), 2)
        figures.update(_paired("adapter_over_raw", took["adapter"], took["raw"]))
        figures.update(_paired("front_over_adapter", took["ttscale"], took["adapter"]))
    return figures


def _paired(name: str, later: list[float], earlier: list[float]) -> dict[str, Any]:
    """The median of the rounds' differences in ms, with its bootstrap interval."""
    paired = median_ci([a - b for a, b in zip(later, earlier, strict=True)])
    return {
        f"{name}_paired_median_ms": round(paired.mean, 2),
        f"{name}_paired_median_ci95_ms": [round(paired.low, 2), round(paired.high, 2)],
    }


async def measure(sides: Sides, args: argparse.Namespace) -> dict[str, Any]:
    await sides.raw(2, 10**6)  # warm-up both paths
    await sides.ttscale(2, 10**6 + 1)
    await sides.raw_plain()
    await sides.ttscale_plain()
    results: dict[str, Any] = {"latency": await _latency(sides, args.latency_requests)}
    _progress("latency", results["latency"])
    for concurrency in args.concurrency:
        key = f"concurrency={concurrency}"
        results[key] = await _throughput(sides, concurrency, args.reps)
        _progress(key, results[key])
    return results


def _progress(name: str, figures: dict[str, Any]) -> None:
    """Each figure on stderr as soon as it is measured (a long run may be cut short)."""
    print(f"{name}: {json.dumps(figures)}", file=sys.stderr, flush=True)


@contextlib.asynccontextmanager
async def _local_sides(model: Path, name: str, args: argparse.Namespace) -> AsyncIterator[Sides]:
    engine = await asyncio.to_thread(LocalVLLMEngine.load, model, name, max_model_len=2048)
    prompt = await engine.render_chat(MESSAGES)
    raw, raw_plain = _local_raw(engine, prompt, args.n, args.tokens, args.plain_tokens)
    async with serve_app(engine, max_n=args.n) as url, _client() as client:
        ours, plain = _ttscale_rounds(client, url, name, args.n, args.tokens, args.plain_tokens)
        yield Sides(raw, ours, raw_plain, plain)


@contextlib.asynccontextmanager
async def _remote_sides(model: Path, name: str, args: argparse.Namespace) -> AsyncIterator[Sides]:
    upstream = stand_in_server if args.mode == "stand-in" else vllm_server
    async with upstream(model, name) as vllm_url:
        probe = await RemoteVLLMEngine.connect([vllm_url])
        prompt = await probe.render_chat(MESSAGES)  # the server's own rendering
        await probe.close()
        front = ttscale_front(vllm_url, model, "--max-n", str(args.n))
        adapter = await RemoteVLLMEngine.connect([vllm_url], model_path=str(model))
        try:
            async with front as url, _client() as client:
                shape = (args.n, args.tokens, args.plain_tokens)
                raw, raw_plain = _remote_raw(client, vllm_url, name, prompt, *shape)
                ours, plain = _ttscale_rounds(client, url, name, *shape)
                if args.ours == "raw-per-sample":
                    ours = _raw_per_sample(client, vllm_url, name, prompt, args.n, args.tokens)
                yield Sides(raw, ours, raw_plain, plain, _adapter_plain(adapter, args.plain_tokens))
        finally:
            await adapter.close()


def _adapter_plain(engine: RemoteVLLMEngine, tokens: int) -> Plain:
    """What the front does for a plain chat completion, minus its HTTP server: render the
    chat locally, sample through the adapter, wait for the text."""
    spec = SamplingSpec(max_tokens=tokens, temperature=0.0)

    async def plain() -> None:
        prompt = await engine.render_chat(MESSAGES)
        await engine.generate(prompt, spec)

    return plain


async def run(args: argparse.Namespace) -> dict[str, Any]:
    model, name = model_to_measure(args.model)
    opener = _local_sides if args.mode == "local" else _remote_sides
    async with opener(model, name, args) as sides:
        results = await measure(sides, args)
    return {
        "mode": args.mode, "ours": args.ours, "model": name, "n": args.n, "tokens": args.tokens,
        **results,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["local", "remote", "stand-in"], default="local")
    parser.add_argument("--model", help="model directory (default: embedded SmolLM2)")
    parser.add_argument(
        "--concurrency", type=lambda t: [int(x) for x in t.split(",") if x], default=[16, 64],
        help='concurrent requests per round, e.g. 16,64 ("" for the latency only)',
    )  # fmt: skip
    parser.add_argument("--n", type=int, default=8, help="samples per request")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per sample")
    parser.add_argument("--reps", type=int, default=3, help="interleaved round pairs")
    parser.add_argument("--latency-requests", type=int, default=30)
    parser.add_argument(
        "--plain-tokens", type=int, default=16,
        help="greedy tokens of each plain chat completion of the latency rounds (fewer: "
        "shorter requests, whose timing varies less, so the added latency is resolved "
        "more finely)",
    )  # fmt: skip
    parser.add_argument(
        "--ours", choices=["ttscale", "raw-per-sample"], default="ttscale",
        help="remote: what the throughput rounds set against raw n=N requests; "
        "raw-per-sample sends the same samples straight to vLLM one request each",
    )  # fmt: skip
    args = parser.parse_args()
    if args.ours != "ttscale" and args.mode != "remote":
        parser.error(
            "--ours raw-per-sample compares two ways of calling a vLLM server: --mode remote"
        )
    if args.mode == "stand-in" and args.concurrency:
        parser.error('--mode stand-in measures one request\'s latency: add --concurrency ""')
    prepare_measurement()
    print(json.dumps(asyncio.run(run(args)), indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
