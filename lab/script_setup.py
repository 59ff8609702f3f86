"""What every measurement script does before it measures: quiet logs, vLLM's CPU
environment, and the model to load (a `--model` directory or the embedded default)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from ttscale.benchmarks.datasets import load_dataset
from ttscale.engine.local_vllm import apply_cpu_defaults
from ttscale.engine.model_store import DEFAULT_MODEL_NAME, ensure_default_model
from ttscale.engine.protocol import Engine


def prepare_measurement() -> None:
    """Warnings only (ours and vLLM's), and the CPU settings vLLM reads at import."""
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    apply_cpu_defaults()


def model_to_measure(model: str | None) -> tuple[Path, str]:
    """The model directory and its served name: `model`, or the embedded SmolLM2
    (converted on first use)."""
    if model:
        path = Path(model)
        return path, path.name
    return ensure_default_model(), DEFAULT_MODEL_NAME


async def gsm8k_prompts(engine: Engine, count: int) -> list[list[int]]:
    """The first `count` GSM8K problems as chat prompts rendered by `engine`: the load the
    engine-throughput scripts send."""
    problems = load_dataset("gsm8k")[:count]
    return [await engine.render_chat([{"role": "user", "content": p.problem}]) for p in problems]


EngineRun = Callable[[Path, str, int, int, int], Awaitable[dict]]
"""(model directory, served name, tokens per sample, repetitions, batch n) -> summary."""


def engine_script_main(description: str, run: EngineRun) -> None:
    """The command line of the scripts that time one in-process engine at n=1 and at a
    batched n: `--model`, `--tokens`, `--reps`, `--batch`; prints the summary as JSON."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", help="model directory (default: embedded SmolLM2)")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per sample")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="the n of the batched case")
    args = parser.parse_args()
    prepare_measurement()
    model, name = model_to_measure(args.model)
    summary = asyncio.run(run(model, name, args.tokens, args.reps, args.batch))
    print(json.dumps(summary, indent=2))
