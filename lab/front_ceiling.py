"""ttscale's own cost per generated token: one front process over an instant engine.

On a GPU the engine makes tens of thousands of tokens/s, and everything ttscale does per
token runs in the front's one Python process; on these CPUs the engine hides that cost.
Here the engine answers at once, so the front's CPU time is all there is to measure:

- `local`: `lab.instant_front`, the app as `ttscale serve` builds it over the in-process
  adapter (`LocalVLLMEngine`) on an `InstantLLM` (`lab.instant_engine`);
- `remote`: `ttscale serve --engine remote` unchanged, over `lab.instant_vllm` (vLLM's
  wire format, streamed as fast as the front reads).

Both fronts take their reward models (`--prm`, `--orm`) from `lab.instant_vllm`'s
pooling stand-in. This process is the load generator: C closed-loop clients send one
strategy's requests back to back for `--seconds`, and the front's CPU time over the round
(user + system of its process, from /proc; its grading workers apart) is divided by the
tokens the responses bill (`usage.completion_tokens`, aborted samples' tokens included).
Rounds are interleaved (repetition, then mode, strategy, concurrency), so machine noise
falls on all of them; figures are min and median over repetitions.

`--profile SECONDS` records each mode's front with py-spy during one round per strategy
(at the first concurrency given) and writes the top frames by own time.
`--own-cost` times the instant engine alone (no consumer but a loop), the part of the
in-process figures that is the stand-in's, not ttscale's.

    .venv/bin/python -m lab.front_ceiling --reps 3 --seconds 4 --tokens 512
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from lab.script_setup import model_to_measure
from lab.serving import free_port, serve_command

MESSAGES = [
    {"role": "user", "content": "A farmer picks 60 apples and sells 48. How many are left? "
     "Put the answer in \\boxed{}."}
]  # fmt: skip


def _strategy(name: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"ttscale": {"strategy": name, "params": params}}


STRATEGIES: dict[str, dict[str, Any]] = {
    "plain_n8": {"n": 8},
    "sc16": _strategy("self_consistency", {"n": 16}),
    "inverse_entropy16_top20": _strategy("inverse_entropy", {"n": 16, "top_k": 20}),
    "deepconf16_online": _strategy("deepconf", {"n": 16}),
    "step_search_w4_prm": _strategy("step_search", {"verifier": "prm", "beam_width": 4}),
    "best_of_n16_orm": _strategy("best_of_n", {"n": 16, "verifier": "orm"}),
}


@dataclass
class Front:
    mode: str
    url: str
    pid: int


def _body(model: str, strategy: str, tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": MESSAGES,
        "max_tokens": tokens,
        "temperature": 1.0,
        **STRATEGIES[strategy],
    }


def _cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


async def measure_round(
    client: httpx.AsyncClient, front: Front, body: dict[str, Any], concurrency: int, seconds: float
) -> dict[str, Any]:
    """C clients back to back for `seconds`: tokens, wall time, the front's CPU time."""
    process = psutil.Process(front.pid)
    workers = process.children(recursive=True)
    tokens, requests = 0, 0
    cpu0, workers0 = _cpu([process]), _cpu(workers)
    started = time.perf_counter()
    deadline = started + seconds

    async def client_loop() -> None:
        nonlocal tokens, requests
        while time.perf_counter() < deadline:
            reply = await client.post(f"{front.url}/v1/chat/completions", json=body)
            reply.raise_for_status()
            tokens += reply.json()["usage"]["completion_tokens"]
            requests += 1

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    cpu = _cpu([process]) - cpu0
    return {
        "tokens": tokens,
        "requests": requests,
        "wall_s": wall,
        "cpu_s": cpu,
        "workers_cpu_s": _cpu(workers) - workers0,
        "us_per_token": 1e6 * cpu / max(tokens, 1),
        "wall_tok_s": tokens / wall,
    }


@contextlib.asynccontextmanager
async def _fronts(model: Path, name: str, modes: list[str]) -> AsyncIterator[list[Front]]:
    python = sys.executable
    stand_port = free_port()
    stand_in = [python, "-m", "lab.instant_vllm", "--model", str(model),
                "--served-model-name", name, "--port", str(stand_port)]  # fmt: skip
    async with contextlib.AsyncExitStack() as stack:
        stand_url = await stack.enter_async_context(
            serve_command(stand_in, stand_port, "/v1/models")
        )
        rewards = ["--prm", f"prm={stand_url}", "--orm", f"orm={stand_url}", "--max-n", "64"]
        fronts = []
        for mode in modes:
            port = free_port()
            if mode == "local":
                command = [python, "-m", "lab.instant_front", "--model", str(model),
                           "--port", str(port), *rewards]  # fmt: skip
            else:
                command = [python, "-m", "ttscale.cli", "serve", "--engine", "remote",
                           "--remote-url", stand_url, "--model", str(model), "--port",
                           str(port), "--log-level", "warning", *rewards]  # fmt: skip
            url = await stack.enter_async_context(serve_command(command, port, "/health"))
            fronts.append(Front(mode, url, _server_pid(port)))
        yield fronts


def _server_pid(port: int) -> int:
    """The process listening on `port` (the front itself, not a wrapper)."""
    for connection in psutil.net_connections("tcp"):
        if connection.laddr and connection.laddr.port == port and connection.status == "LISTEN":
            return int(connection.pid)
    raise RuntimeError(f"nothing listens on {port}")


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    us = [r["us_per_token"] for r in rounds]
    return {
        "us_per_token_min": round(min(us), 2),
        "us_per_token_median": round(statistics.median(us), 2),
        "ceiling_tok_s_median": round(1e6 / statistics.median(us)),
        "wall_tok_s_median": round(statistics.median(r["wall_tok_s"] for r in rounds)),
        "tokens_per_request": round(
            sum(r["tokens"] for r in rounds) / max(1, sum(r["requests"] for r in rounds))
        ),
        "workers_cpu_us_per_token_median": round(
            statistics.median(1e6 * r["workers_cpu_s"] / max(r["tokens"], 1) for r in rounds), 2
        ),
        "rounds": [round(u, 2) for u in us],
    }


async def _profile(
    client: httpx.AsyncClient, front: Front, body: dict[str, Any], concurrency: int,
    seconds: float, out: Path,
) -> dict[str, Any]:  # fmt: skip
    """One round with py-spy recording the front: raw stacks to `out`, top frames."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [spy, "record", "--pid", str(front.pid), "--rate", "250", "--format", "raw",
               "--nonblocking", "--duration", str(int(seconds) + 1), "-o", str(out)]  # fmt: skip
    recorder = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    await asyncio.sleep(0.5)
    figures = await measure_round(client, front, body, concurrency, seconds)
    _, error = await recorder.communicate()
    text = await asyncio.to_thread(_read, out)
    if recorder.returncode != 0 or text is None:
        return {"error": error.decode(errors="replace").strip()[-500:], **figures}
    return {"top": top_frames(text), **figures}


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def top_frames(collapsed: str, count: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Functions by share of samples, from py-spy's collapsed stacks ("frame;frame;... N"
    per line): "own", where the function is the innermost frame; "ttscale", the
    product's functions (and the lab's) anywhere on the stack (inclusive time)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        frames = [_short(frame) for frame in stack.split(";")]
        own[frames[-1]] += int(number)
        for frame in set(frames):
            if frame.split(" (")[-1].split("/")[0] in PRODUCT_FOLDERS:
                inclusive[frame] += int(number)
        total += int(number)

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(frame, round(n / max(total, 1), 4)) for frame, n in counter.most_common(count)]

    return {"own": shares(own), "ttscale": shares(inclusive)}


PRODUCT_FOLDERS = ("engine", "server", "strategies", "verifiers", "lab")
REPOSITORY = f"{Path(__file__).resolve().parents[1]}/"
"""Stripped from the product's frames, which py-spy names by absolute path."""


def _short(frame: str) -> str:
    """`function (path/to/site-packages/pkg/mod.py:12)` -> `function (pkg/mod.py)`: one
    entry per function, whatever line was running."""
    function, _, where = frame.partition(" (")
    where = where.removeprefix(REPOSITORY)
    for marker in ("site-packages/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    where = where.rstrip(")").rsplit(":", 1)[0]
    return f"{function} ({where})" if where else function


def own_cost(model: Path, tokens: int) -> dict[str, float]:
    """The instant engine alone, its outputs read by a bare loop: its own CPU µs per token
    (final only without and with top-20 logprobs; one delta per token with them)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    from lab.instant_engine import InstantLLM
    from lab.instant_material import Material
    from ttscale.engine.local_tokenizer import load_tokenizer

    llm = InstantLLM(Material(load_tokenizer(model)))
    cases = {
        "final": SamplingParams(max_tokens=tokens),
        "final, top-20": SamplingParams(max_tokens=tokens, logprobs=20),
        "deltas, top-20": SamplingParams(
            max_tokens=tokens, logprobs=20, output_kind=RequestOutputKind.DELTA
        ),
    }

    async def drain(params: SamplingParams, samples: int) -> int:
        async def one(i: int) -> int:
            count = 0
            async for output in llm.generate({"prompt_token_ids": [1]}, params, f"own-{i}"):
                count += len(output.outputs[0].token_ids)
            return count

        return sum(await asyncio.gather(*(one(i) for i in range(samples))))

    results = {}
    for case, params in cases.items():
        asyncio.run(drain(params, 64))  # warm the caches
        started = time.process_time()
        produced = asyncio.run(drain(params, 256))
        results[case] = round(1e6 * (time.process_time() - started) / produced, 3)
    return results


async def run(args: argparse.Namespace) -> dict[str, Any]:
    model, name = model_to_measure(args.model)
    results: dict[str, Any] = {"tokens_per_sample": args.tokens, "seconds": args.seconds}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with (
        _fronts(model, name, args.modes) as fronts,
        httpx.AsyncClient(limits=limits, timeout=600) as client,
    ):
        for front in fronts:  # warm-up: every strategy once
            for strategy in args.strategies:
                await measure_round(client, front, _body(name, strategy, args.tokens), 1, 0.01)
        rounds: dict[str, list[dict[str, Any]]] = {}
        for rep in range(args.reps):
            for front in fronts:
                for strategy in args.strategies:
                    body = _body(name, strategy, args.tokens)
                    for concurrency in args.concurrency:
                        key = f"{front.mode} | {strategy} | C={concurrency}"
                        figures = await measure_round(
                            client, front, body, concurrency, args.seconds
                        )
                        rounds.setdefault(key, []).append(figures)
                        _progress(key, rep, figures)
                        results["results"] = {key: _summary(r) for key, r in rounds.items()}
                        _save(args.out, results)
        if args.profile:
            profiles = {}
            folder = Path(tempfile.mkdtemp(prefix="front-profile-"))
            for front in fronts:
                for strategy in args.strategies:
                    key = f"{front.mode} | {strategy} | C={args.concurrency[0]}"
                    out = folder / f"{front.mode}-{strategy}.txt"
                    profiles[key] = await _profile(
                        client, front, _body(name, strategy, args.tokens),
                        args.concurrency[0], args.profile, out,
                    )  # fmt: skip
                    print(f"profile {key}: {out}", file=sys.stderr, flush=True)
                    results["profiles"] = profiles
                    _save(args.out, results)
    return results


def _save(path: Path | None, results: dict[str, Any]) -> None:
    """The figures so far (a long run may be cut short)."""
    if path is not None:
        path.write_text(json.dumps(results, indent=2))


def _progress(key: str, rep: int, figures: dict[str, Any]) -> None:
    print(
        f"{key} rep {rep}: {figures['us_per_token']:.2f} us/token, "
        f"{figures['wall_tok_s']:.0f} tok/s wall, {figures['tokens']} tokens",
        file=sys.stderr,
        flush=True,
    )


def _list(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    return lambda text: [kind(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: embedded SmolLM2)")
    parser.add_argument("--modes", type=_list(str), default=["local", "remote"])
    parser.add_argument("--strategies", type=_list(str), default=list(STRATEGIES),
                        help="comma-separated keys of STRATEGIES")  # fmt: skip
    parser.add_argument("--concurrency", type=_list(int), default=[1, 16, 64])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one round")
    parser.add_argument("--tokens", type=int, default=512, help="max_tokens of each sample")
    parser.add_argument("--profile", type=float, default=0.0, help="seconds of py-spy per front")
    parser.add_argument("--own-cost", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the figures here, as they come")
    args = parser.parse_args()
    unknown = set(args.strategies) - set(STRATEGIES)
    if unknown:
        parser.error(f"unknown strategies {sorted(unknown)}; known: {list(STRATEGIES)}")
    results = asyncio.run(run(args))
    if args.own_cost:
        model, _ = model_to_measure(args.model)
        results["instant_engine_own_us_per_token"] = own_cost(model, args.tokens)
        _save(args.out, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
