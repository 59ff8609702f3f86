"""Step search: what a wider beam costs in wall time, and how much prefill the prefix cache
saves.

All live beams' expansions go to the engine together, so on hardware with room for a
batch a wider beam should cost little more wall time per depth than a single beam. Each
GSM8K problem runs at beam width 1 and at the wider width back to back (same seed, the
order alternating from problem to problem); the figure is the ratio of wall time per depth
reached. The served model is its own step verifier (the judge), so one engine does
everything. The prefix-cache hit rate is the request's cached share of policy prompt
tokens, from the evidence.

    .venv/bin/python -m lab.step_search_batching --problems 6
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from lab.script_setup import prepare_measurement
from ttscale.benchmarks.backends import InProcessBackend
from ttscale.benchmarks.datasets import Problem, Selection, load_problems
from ttscale.benchmarks.runner import DEFAULT_PROMPT, render_prompt
from ttscale.engine.protocol import new_request_id
from ttscale.server.config import Settings
from ttscale.strategies.service import Service, ServiceRequest
from ttscale.strategies.strategy_choice import StrategyChoice


def _params(width: int, args: argparse.Namespace, seed: int, *, refine: bool) -> dict[str, Any]:
    return {
        "verifier": "judge",
        "beam_width": width,
        "expansions": args.expansions,
        "max_steps": args.depth,
        "step_max_tokens": args.step_tokens,
        "refine": refine,
        "sampling": {"temperature": 0.8, "max_tokens": args.step_tokens, "seed": seed},
    }


async def _solve(service: Service, problem: Problem, params: dict[str, Any]) -> dict[str, Any]:
    """One step search; its wall time, depth and prefix-cache hit rate."""
    request = ServiceRequest(
        request_id=new_request_id("steps"),
        model=service.engine.info.model_name,
        messages=render_prompt(DEFAULT_PROMPT, problem),
        choice=StrategyChoice(strategy="step_search", params=params),
    )
    started = time.perf_counter()
    result = await service.execute(await service.prepare(request))
    wall = time.perf_counter() - started
    details = (result.evidence or {})["details"]
    return {"wall_s": wall, "depth": details["depth"], "hit_rate": details["prefix_cache_hit_rate"]}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    backend = await InProcessBackend.open(Settings(block_size=args.block_size))
    service = backend.service
    problems = load_problems(["gsm8k"], Selection(args.problems, (), (), ()))
    rows = []
    try:
        for number, problem in enumerate(problems):
            widths = [1, args.width] if number % 2 == 0 else [args.width, 1]
            runs = {}
            for width in widths:
                params = _params(width, args, number, refine=False)
                runs[width] = await _solve(service, problem, params)
            params = _params(args.width, args, number, refine=True)
            refined = await _solve(service, problem, params)
            per_depth = {w: r["wall_s"] / max(r["depth"], 1) for w, r in runs.items()}
            rows.append({"problem": problem.id, "runs": runs, "refined": refined,
                         "ratio": per_depth[args.width] / per_depth[1]})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    finally:
        await backend.close()
    hit_rates = [row["refined"]["hit_rate"] for row in rows] + [
        r["hit_rate"] for row in rows for r in row["runs"].values()
    ]
    return {
        "block_size": args.block_size or "vLLM default",
        "width": args.width,
        "expansions": args.expansions,
        "wall_per_depth_ratio_median": round(statistics.median(r["ratio"] for r in rows), 3),
        "ratios": [round(r["ratio"], 3) for r in rows],
        "prefix_cache_hit_rate_median": round(statistics.median(h for h in hit_rates if h), 3),
        "prefix_cache_hit_rate_min": round(min(h for h in hit_rates if h), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=6)
    parser.add_argument("--width", type=int, default=4, help="the wide beam compared with 1")
    parser.add_argument("--expansions", type=int, default=2)
    parser.add_argument("--depth", type=int, default=3, help="max_steps")
    parser.add_argument("--step-tokens", type=int, default=48)
    parser.add_argument("--block-size", type=int, help="KV block size (default: vLLM's)")
    args = parser.parse_args()
    prepare_measurement()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
