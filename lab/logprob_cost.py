"""What top-k logprobs and the online confidence stop cost in generated tokens/s.

DeepConf needs the top-k log-probabilities of every generated token, and its online stop
needs them as they are made (DELTA output, a window check per chunk) instead of once at
the end (FINAL_ONLY). This measures, on the in-process engine and the embedded SmolLM2,
the throughput of the engine layer with:

- `none`: no logprobs (the baseline);
- `k5`, `k20`: top-5 / top-20 logprobs, reduced to entropy and confidence per token;
- `k20-watch`: top-20 with `confidence_stop` at a threshold of -inf, so no sample is ever
  stopped and the figure is the pure overhead of streaming and watching.

Every case runs in each repetition, in an order rotated from rep to rep, with the same
prompt, seeds and lengths, so machine noise hits all alike; read the ratios to `none`
(median over the paired repetitions), not the absolute tokens/s.

    .venv/bin/python -m lab.logprob_cost --tokens 256 --reps 3
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import sys
import time
from pathlib import Path

from lab.script_setup import engine_script_main
from ttscale.engine.local_vllm import LocalVLLMEngine
from ttscale.engine.types import ConfidenceStop, SamplingSpec

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
WATCH = ConfidenceStop(window=64, threshold=-math.inf)
CASES: dict[str, dict[str, object]] = {
    "none": {},
    "k5": {"logprobs": 5},
    "k20": {"logprobs": 20},
    "k20-watch": {"logprobs": 20, "confidence_stop": WATCH},
}


async def _rate(engine: LocalVLLMEngine, prompt: list[int], case: str, n: int, tokens: int):
    """Generated tokens/s of one `generate` call of `n` samples under `case`."""
    spec = SamplingSpec(temperature=1.0, max_tokens=tokens, ignore_eos=True, seed=0)
    spec = spec.replace(**CASES[case])
    started = time.perf_counter()
    result = await engine.generate(prompt, spec, n=n)
    elapsed = time.perf_counter() - started
    assert result.generated_tokens == n * tokens, f"{case}: samples were cut short"
    return result.generated_tokens / elapsed


async def _paired(
    engine: LocalVLLMEngine, prompt: list[int], n: int, tokens: int, reps: int
) -> dict[str, list[float]]:
    """tokens/s of every case in every rep, the case order rotated from rep to rep."""
    names = list(CASES)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            rates[name].append(await _rate(engine, prompt, name, n, tokens))
        done = {name: round(values[-1], 1) for name, values in rates.items()}
        print(f"n={n} rep {rep}: tok/s {done}", file=sys.stderr, flush=True)
    return rates


def _summary(rates: dict[str, list[float]]) -> dict[str, dict[str, object]]:
    base = rates["none"]
    out: dict[str, dict[str, object]] = {}
    for name, values in rates.items():
        ratios = [v / b for v, b in zip(values, base, strict=True)]
        out[name] = {
            "tok_s": round(statistics.median(values), 1),
            "over_none_median": round(statistics.median(ratios), 3),
            "ratios": [round(r, 3) for r in ratios],
        }
    return out


async def run(model: Path, name: str, tokens: int, reps: int, batch: int) -> dict:
    started = time.perf_counter()
    engine = await asyncio.to_thread(LocalVLLMEngine.load, model, name)
    load_s = time.perf_counter() - started
    try:
        prompt = await engine.render_chat(PROMPT)
        for case in CASES:  # warm-up: first calls of each path pay one-off costs
            await _rate(engine, prompt, case, 1, 8)
        summary: dict[str, object] = {
            "model": name,
            "load_s": round(load_s, 1),
            "tokens_per_sample": tokens,
            "reps": reps,
            "load_average_before": os.getloadavg()[0],
        }
        for n in (1, batch):
            summary[f"n={n}"] = _summary(await _paired(engine, prompt, n, tokens, reps))
        summary["load_average_after"] = os.getloadavg()[0]
        return summary
    finally:
        await engine.close()


def main() -> None:
    engine_script_main(__doc__.splitlines()[0], run)


if __name__ == "__main__":
    main()
