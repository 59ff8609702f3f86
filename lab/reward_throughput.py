"""PRM scoring throughput through vLLM's pooling runner.

Scores batches of multi-step solutions with a PRM and reports solutions/s and prompt
tokens/s. Without --model it builds the tests' tiny random Qwen2ForProcessRewardModel
(2 layers, hidden 128), which measures the serving path rather than a real PRM.

    .venv/bin/python -m lab.reward_throughput --solutions 64 --steps 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

from ttscale.verifiers.reward_model import RewardModel

QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?"
)
STEP = "In May she sold 48 / 2 = {i} clips, so the running total is 48 + {i} = {j} clips."


def solutions(count: int, steps: int) -> list[list[str]]:
    return [[STEP.format(i=k + s, j=48 + k + s) for s in range(steps)] for k in range(count)]


async def measure(model_dir: Path, count: int, steps: int, repeats: int) -> dict:
    started = time.perf_counter()
    prm = await asyncio.to_thread(RewardModel.load, model_dir, "prm")
    load_s = time.perf_counter() - started
    batch = solutions(count, steps)
    await prm.score_steps(QUESTION, batch[:2])  # warm-up
    rates, token_rates = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        result = await prm.score_steps(QUESTION, batch)
        elapsed = time.perf_counter() - started
        assert all(len(s) == steps for s in result.scores)
        rates.append(count / elapsed)
        token_rates.append(result.usage.prompt_tokens / elapsed)
    await prm.close()
    return {
        "model": model_dir.name,
        "load_s": round(load_s, 1),
        "solutions": count,
        "steps_per_solution": steps,
        "prompt_tokens_per_solution": result.usage.prompt_tokens // count,
        "solutions_per_s_median": round(statistics.median(rates), 1),
        "prompt_tokens_per_s_median": round(statistics.median(token_rates), 0),
        "step_scores_per_s_median": round(statistics.median(rates) * steps, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="PRM directory (default: the tests' tiny PRM)")
    parser.add_argument("--solutions", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if args.model:
        model_dir = Path(args.model)
    else:
        from tests.support.tiny_models import tiny_reward_model_dir

        model_dir = tiny_reward_model_dir("prm")
    print(
        json.dumps(
            asyncio.run(measure(model_dir, args.solutions, args.steps, args.repeats)), indent=2
        )
    )


if __name__ == "__main__":
    main()
