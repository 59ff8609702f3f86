"""When a streamed sample's first bytes arrive: from a replica directly, and through
vllm-router to the same replica.

Two replicas of a model (each on its share of the cores) and the router in front
(`consistent_hash`, every stream keyed alike, so all go to one replica). For k concurrent
streams (each `max_tokens` tokens, `ignore_eos`), the time from sending to the first
body bytes of each stream, and to the end of the slowest one; direct and routed rounds
alternate (ABBA) so that both see the same machine load.

This is what a remote front waits before it sees a sample start (and before a client
that aborts or disconnects can be told anything happened). The router's own logs and
counters do not show it.

    .venv/bin/python -m lab.router_first_byte --streams 1,4,8 --reps 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from lab.script_setup import model_to_measure, prepare_measurement
from tests.support.cluster import Cluster, local_cluster
from ttscale.engine.remote import parse_prometheus

PROMPT = [1000 + i for i in range(160)]
KEY = {"x-session-id": "first-byte"}


async def _stream(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> float:
    """Seconds to this stream's first body bytes (read to the end)."""
    sent = time.perf_counter()
    first: float | None = None
    async with client.stream("POST", f"{url}/v1/completions", json=body, headers=KEY) as reply:
        reply.raise_for_status()
        async for _ in reply.aiter_bytes():
            if first is None:
                first = time.perf_counter() - sent
    return first if first is not None else float("nan")


async def _round(client: httpx.AsyncClient, url: str, body: dict[str, Any], k: int) -> dict:
    started = time.perf_counter()
    firsts = await asyncio.gather(*(_stream(client, url, body) for _ in range(k)))
    return {"first_byte_s": sorted(firsts), "all_done_s": time.perf_counter() - started}


async def measure(cluster: Cluster, name: str, args: argparse.Namespace) -> dict[str, Any]:
    body = {"model": name, "prompt": PROMPT, "max_tokens": args.tokens, "ignore_eos": True,
            "temperature": 1.0, "stream": True}  # fmt: skip
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=600) as client:
        direct = await _keyed_replica(client, cluster, body)
        sides = {"router": cluster.router.url, "direct": direct}
        for k in args.streams:
            rounds: dict[str, list[dict]] = {"direct": [], "router": []}
            for rep in range(args.reps):
                order = ["direct", "router"] if rep % 2 == 0 else ["router", "direct"]
                for side in order:
                    rounds[side].append(await _round(client, sides[side], body, k))
            results[str(k)] = _summary(rounds)
            print(f"{k} streams: {json.dumps(results[str(k)])}", file=sys.stderr)
    return results


async def _keyed_replica(client: httpx.AsyncClient, cluster: Cluster, body: dict) -> str:
    """The replica the key routes to: one token through the router, and who counted it."""

    async def generated() -> list[float]:
        values = []
        for replica in cluster.replicas:
            text = (await client.get(f"{replica.url}/metrics")).text
            values.append(parse_prometheus(text).get("vllm:generation_tokens_total", 0.0))
        return values

    before = await generated()
    await _stream(client, cluster.router.url, {**body, "max_tokens": 1})
    for _ in range(100):
        grown = [a - b for a, b in zip(await generated(), before, strict=True)]
        if sum(grown) >= 1:
            return cluster.replicas[grown.index(max(grown))].url
        await asyncio.sleep(0.1)
    raise RuntimeError("no replica counted the keyed request")


def _summary(rounds: dict[str, list[dict]]) -> dict[str, Any]:
    def median_of(side: str, pick) -> float:
        return round(statistics.median(pick(r) for r in rounds[side]), 3)

    return {
        side: {
            "first_byte_median_s": median_of(side, lambda r: statistics.median(r["first_byte_s"])),
            "first_byte_max_s": median_of(side, lambda r: max(r["first_byte_s"])),
            "all_done_s": median_of(side, lambda r: r["all_done_s"]),
        }
        for side in rounds
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: embedded SmolLM2)")
    parser.add_argument(
        "--streams", type=lambda t: [int(x) for x in t.split(",")], default=[1, 4, 8],
        help="concurrent streams per round, e.g. 1,4,8",
    )  # fmt: skip
    parser.add_argument("--tokens", type=int, default=512, help="tokens per stream")
    parser.add_argument("--reps", type=int, default=2, help="round pairs per stream count")
    args = parser.parse_args()
    prepare_measurement()
    model, name = model_to_measure(args.model)
    with tempfile.TemporaryDirectory() as logs:
        with local_cluster(model, 2, Path(logs), name=name) as cluster:
            results = asyncio.run(measure(cluster, name, args))
    print(json.dumps({"model": name, "tokens": args.tokens, "reps": args.reps, **results}))


if __name__ == "__main__":
    main()
