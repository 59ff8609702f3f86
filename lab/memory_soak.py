"""Server memory across many requests: does the serving process grow?

Serves the embedded model in process and sends `--requests` requests, `--concurrency` at
a time, cycling through the request kinds a server sees (plain chat, plain completion,
streamed chat, self-consistency, a client error). The resident set size of this process
(the HTTP server, the service and the client; vLLM's engine core is a child process and
is reported apart) is read after a warm-up and every `--every` requests after it.

    .venv/bin/python -m lab.memory_soak --requests 1000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
from typing import Any

import httpx
import psutil

from lab.script_setup import model_to_measure, prepare_measurement
from lab.serving import serve_app
from ttscale.engine.local_vllm import LocalVLLMEngine

QUESTION = [{"role": "user", "content": "What is 12 + 30? Put the answer in \\boxed{}."}]


def request_kinds(model: str) -> list[tuple[str, dict[str, Any]]]:
    """(path, body) of each kind of request, cycled through in order."""
    short = {"max_tokens": 8, "temperature": 0.8}
    return [
        ("/v1/chat/completions", {"model": model, "messages": QUESTION, **short}),
        ("/v1/completions", {"model": model, "prompt": "12 + 30 =", **short}),
        ("/v1/chat/completions", {"model": model, "messages": QUESTION, "stream": True, **short}),
        (
            "/v1/chat/completions",
            {"model": f"{model}:self_consistency?n=4", "messages": QUESTION, **short},
        ),
        ("/v1/chat/completions", {"model": model, "messages": [], **short}),  # a 400
    ]


async def _send(client: httpx.AsyncClient, url: str, path: str, body: dict[str, Any]) -> int:
    async with client.stream("POST", f"{url}{path}", json=body, timeout=600) as response:
        await response.aread()
        return response.status_code


async def _batch(client: httpx.AsyncClient, url: str, kinds: list, start: int, count: int,
                 concurrency: int) -> dict[int, int]:  # fmt: skip
    """Send requests start..start+count, `concurrency` at a time; counts by status."""
    statuses: dict[int, int] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one(number: int) -> None:
        path, body = kinds[number % len(kinds)]
        async with gate:
            status = await _send(client, url, path, body)
        statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(one(i) for i in range(start, start + count)))
    return statuses


def _rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


async def run(args: argparse.Namespace) -> dict[str, Any]:
    model, name = model_to_measure(args.model)
    engine = await asyncio.to_thread(LocalVLLMEngine.load, model, name, max_model_len=2048)
    me = psutil.Process()
    kinds = request_kinds(name)
    readings: list[dict[str, Any]] = []
    statuses: dict[int, int] = {}
    async with serve_app(engine) as url, httpx.AsyncClient() as client:
        await _batch(client, url, kinds, 0, args.warmup, args.concurrency)
        done = 0
        while done < args.requests:
            count = min(args.every, args.requests - done)
            batch = await _batch(client, url, kinds, done, count, args.concurrency)
            for status, seen in batch.items():
                statuses[status] = statuses.get(status, 0) + seen
            done += count
            gc.collect()
            children = sum(_rss_mb(c) for c in me.children(recursive=True))
            readings.append({"requests": done, "rss_mb": round(_rss_mb(me), 1),
                             "engine_rss_mb": round(children, 1)})  # fmt: skip
            print(json.dumps(readings[-1]), flush=True)
    first, last = readings[0]["rss_mb"], readings[-1]["rss_mb"]
    return {
        "requests_after_warmup": args.requests,
        "warmup": args.warmup,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "rss_first_mb": first,
        "rss_last_mb": last,
        "rss_max_mb": max(r["rss_mb"] for r in readings),
        "growth": round(last / first - 1, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: embedded SmolLM2)")
    parser.add_argument("--requests", type=int, default=1000, help="requests after warm-up")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--every", type=int, default=100, help="requests between readings")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    prepare_measurement()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
