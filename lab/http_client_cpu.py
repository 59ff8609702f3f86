"""CPU that reading one streamed completion costs the front, by HTTP client.

The remote adapter sends every sample as its own streamed `/v1/completions` request, so
the client library's cost per request is paid once per sample, on the cores the engine
needs. This times the client side only: a stand-in server in another process answers
each request at once with what vLLM streams for a 16-token sample in one chunk (a
chunk, a usage chunk, `[DONE]`), and this process's CPU time per request is read from
`getrusage`, rounds of each client interleaved. Rows: a plain httpx reader (what the
adapter used before), a plain aiohttp reader, and the adapter itself
(`RemoteVLLMEngine.generate`, n=1: its routing key, stop watch and bookkeeping too).

    .venv/bin/python -m lab.http_client_cpu --requests 500 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx

from lab.serving import free_port, serve_command
from ttscale.engine.remote import RemoteVLLMEngine
from ttscale.engine.types import EngineInfo, SamplingSpec

PROMPT = list(range(40))
TOKENS = 16
Reader = Callable[[], Awaitable[None]]


def _events() -> bytes:
    choice = {"index": 0, "text": " word" * TOKENS, "token_ids": list(range(TOKENS))}
    chunk = {"choices": [{**choice, "finish_reason": "length"}]}
    usage = {"choices": [], "usage": {"prompt_tokens": len(PROMPT), "completion_tokens": TOKENS}}
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in (chunk, usage)) + (
        b"data: [DONE]\n\n"
    )


async def _stand_in(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI app: every POST gets the same finished sample as a server-sent event stream."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _events()})


def _serve(port: int) -> None:
    import uvicorn

    uvicorn.run(_stand_in, host="127.0.0.1", port=port, log_level="warning")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _per_request_ms(read: Reader, requests: int) -> float:
    started = _cpu_s()
    for _ in range(requests):
        await read()
    return (_cpu_s() - started) / requests * 1e3


def _body() -> dict[str, Any]:
    return {"model": "m", "prompt": PROMPT, "stream": True, "max_tokens": TOKENS}


def _httpx_reader(client: httpx.AsyncClient, url: str) -> Reader:
    async def read() -> None:
        async with client.stream("POST", url, json=_body()) as response:
            async for line in response.aiter_lines():
                if line.startswith("data:") and line[5:].strip() != "[DONE]":
                    json.loads(line[5:])

    return read


def _aiohttp_reader(session: aiohttp.ClientSession, url: str) -> Reader:
    async def read() -> None:
        async with session.post(url, json=_body()) as response:
            async for line in response.content:
                if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
                    json.loads(line[5:])

    return read


def _adapter_reader(engine: RemoteVLLMEngine) -> Reader:
    spec = SamplingSpec(max_tokens=TOKENS)

    async def read() -> None:
        await engine.generate(PROMPT, spec)

    return read


async def measure(requests: int, rounds: int) -> dict[str, Any]:
    port = free_port()
    command = [sys.executable, "-m", __spec__.name, "--serve", str(port)]
    async with serve_command(command, port, "/") as base:
        return await _measure_against(base, requests, rounds)


async def _measure_against(base: str, requests: int, rounds: int) -> dict[str, Any]:
    url = f"{base}/v1/completions"
    info = EngineInfo(model_name="m", max_model_len=4096, backend="vllm-remote")
    engine = RemoteVLLMEngine([base], info)
    try:
        async with httpx.AsyncClient() as client, aiohttp.ClientSession() as session:
            results = await _interleaved(client, session, engine, url, requests, rounds)
    finally:
        await engine.close()
    return {
        name: {"cpu_ms_median": round(statistics.median(v), 3), "rounds": [round(x, 3) for x in v]}
        for name, v in results.items()
    }


async def _interleaved(
    client: httpx.AsyncClient,
    session: aiohttp.ClientSession,
    engine: RemoteVLLMEngine,
    url: str,
    requests: int,
    rounds: int,
) -> dict[str, list[float]]:
    """CPU ms per request of each reader in each round, the order reversed every round."""
    readers = {
        "httpx": _httpx_reader(client, url),
        "aiohttp": _aiohttp_reader(session, url),
        "adapter": _adapter_reader(engine),
    }
    results: dict[str, list[float]] = {name: [] for name in readers}
    for read in readers.values():  # warm-up: connections, first-call caches
        await _per_request_ms(read, 20)
    for number in range(rounds):
        names = list(readers) if number % 2 == 0 else list(readers)[::-1]
        for name in names:
            results[name].append(await _per_request_ms(readers[name], requests))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per client")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the stand-in's port
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve)
        return
    figures = asyncio.run(measure(args.requests, args.rounds))
    print(json.dumps({"tokens_per_sample": TOKENS, "requests": args.requests, **figures}, indent=2))


if __name__ == "__main__":
    main()
