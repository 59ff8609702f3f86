"""Throughput of the engine layer against raw vLLM, in one process on one engine.

Both sides drive the same `AsyncLLM` instance with the same prompt, seeds and lengths,
interleaved rep by rep (raw, layer, raw, layer, ...) so that machine noise hits both
alike; the figure to read is the ratio layer/raw, not the absolute tokens/s.

    .venv/bin/python -m lab.engine_overhead --tokens 256 --reps 3
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

from lab.script_setup import engine_script_main
from ttscale.engine.local_vllm import LocalVLLMEngine
from ttscale.engine.types import SamplingSpec

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


async def _raw(engine: LocalVLLMEngine, prompt: list[int], n: int, tokens: int, tag: str) -> int:
    """One request with vLLM's own parallel sampling (`SamplingParams(n=...)`)."""
    from vllm import SamplingParams
    from vllm.inputs import tokens_input
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(
        n=n,
        temperature=1.0,
        max_tokens=tokens,
        ignore_eos=True,
        seed=0,
        output_kind=RequestOutputKind.FINAL_ONLY,
    )
    final = None
    async for out in engine.vllm.generate(tokens_input(prompt), params, f"raw-{tag}"):
        final = out
    return sum(len(c.token_ids) for c in final.outputs)


async def _layer(engine: LocalVLLMEngine, prompt: list[int], n: int, tokens: int) -> int:
    spec = SamplingSpec(temperature=1.0, max_tokens=tokens, ignore_eos=True, seed=0)
    return (await engine.generate(prompt, spec, n=n)).generated_tokens


async def _timed(coro) -> tuple[int, float]:
    started = time.perf_counter()
    tokens = await coro
    return tokens, time.perf_counter() - started


async def run(model: Path, name: str, tokens: int, reps: int, batch: int) -> dict:
    started = time.perf_counter()
    engine = await asyncio.to_thread(LocalVLLMEngine.load, model, name)
    load_s = time.perf_counter() - started
    prompt = await engine.render_chat(PROMPT)
    await _layer(engine, prompt, 1, 8)  # warm-up
    results: dict[str, dict[str, list[float]]] = {}
    for n in (1, batch):
        rates: dict[str, list[float]] = {"raw": [], "layer": []}
        for rep in range(reps):
            raw_tokens, raw_s = await _timed(_raw(engine, prompt, n, tokens, f"{n}-{rep}"))
            layer_tokens, layer_s = await _timed(_layer(engine, prompt, n, tokens))
            assert raw_tokens == layer_tokens == n * tokens
            rates["raw"].append(raw_tokens / raw_s)
            rates["layer"].append(layer_tokens / layer_s)
        results[f"n={n}"] = rates
    await engine.close()
    summary = {
        "model": name,
        "load_s": round(load_s, 1),
        "tokens_per_sample": tokens,
        "reps": reps,
    }
    for key, rates in results.items():
        raw, layer = statistics.median(rates["raw"]), statistics.median(rates["layer"])
        ratios = [lay / r for lay, r in zip(rates["layer"], rates["raw"], strict=True)]
        summary[key] = {
            "raw_tok_s": round(raw, 1),
            "layer_tok_s": round(layer, 1),
            "layer_over_raw_median": round(statistics.median(ratios), 3),
            "ratios": [round(x, 3) for x in ratios],
        }
    return summary


def main() -> None:
    engine_script_main(__doc__.splitlines()[0], run)


if __name__ == "__main__":
    main()
