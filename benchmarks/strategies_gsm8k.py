"""Strategies at a matched budget on GSM8K, in process on one engine.

Runs each strategy on the first K GSM8K test problems with the same prompt and grader,
and reports accuracy, generated and verifier tokens, FLOPs and wall time per strategy,
plus the tokens adaptive self-consistency saves against fixed N. Every strategy gets
the same per-problem generated-token cap, so the comparison is compute-matched.

    .venv/bin/python -m benchmarks.strategies_gsm8k --limit 30 --n 8 --max-tokens 256
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from server.engine.local_vllm import LocalVLLMEngine
from server.model_store import DEFAULT_MODEL_NAME, ensure_default_model
from strategies.base import StrategyContext, Verifiers
from strategies.budget import Budget, BudgetLimits
from strategies.registry import discover
from verifiers.judge import LLMJudge
from verifiers.math_grader import MathGrader

DATA = Path(__file__).parent / "data" / "gsm8k.jsonl"
INSTRUCTION = "Solve the problem step by step. Put the final answer in \\boxed{{}}.\n\n{problem}"


def settings(n: int, max_tokens: int) -> dict[str, tuple[str, dict[str, Any]]]:
    sampling = {"temperature": 0.7, "max_tokens": max_tokens, "seed": 0}
    temps = [0.0, 0.4, 0.8, 1.2]
    return {
        "greedy": ("self_consistency", {"n": 1, "sampling": {**sampling, "temperature": 0.0}}),
        "best_of_n(logprob)": ("best_of_n", {"n": n, "sampling": sampling}),
        "best_of_n(judge)": ("best_of_n", {"n": n, "sampling": sampling, "verifier": "judge"}),
        "self_consistency": ("self_consistency", {"n": n, "sampling": sampling}),
        "self_consistency(adaptive)": (
            "self_consistency",
            {"n": n, "sampling": sampling, "adaptive": True, "parallel": max(1, n // 4)},
        ),
        "inverse_entropy": ("inverse_entropy", {"n": n, "sampling": sampling}),
        "multi_temperature": (
            "multi_temperature",
            {
                "temperatures": temps,
                "samples_per_temperature": max(1, (n - 1) // (len(temps) - 1)),
                "sampling": sampling,
            },
        ),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    model = Path(args.model) if args.model else ensure_default_model()
    name = model.name if args.model else DEFAULT_MODEL_NAME
    engine = await asyncio.to_thread(LocalVLLMEngine.load, model, name, max_model_len=2048)
    grader = MathGrader()
    await grader.warm_up()
    judge = LLMJudge(engine)
    verifiers = Verifiers(grader, {"judge": judge}, {"judge": judge})
    rows = [json.loads(line) for line in DATA.open()][: args.limit]
    chosen = settings(args.n, args.max_tokens)
    if args.only:
        chosen = {k: v for k, v in chosen.items() if k in args.only.split(",")}
    cap = args.n * args.max_tokens  # the same generated-token budget for every strategy
    registry = discover()
    report: dict[str, Any] = {
        "model": name,
        "problems": len(rows),
        "n": args.n,
        "max_tokens": args.max_tokens,
        "token_cap_per_problem": cap,
        "strategies": {},
    }
    for label, (strategy_name, raw) in chosen.items():
        strategy = registry[strategy_name]
        params = strategy.parse_params(raw)
        correct = generated = verifier = 0
        flops = 0.0
        started = time.perf_counter()
        for number, row in enumerate(rows, 1):
            messages = [{"role": "user", "content": INSTRUCTION.format(problem=row["problem"])}]
            ctx = StrategyContext(
                engine=engine,
                verifiers=verifiers,
                budget=Budget(BudgetLimits(max_generated_tokens=cap), engine.info.shape),
                messages=messages,
                prompt_ids=await engine.render_chat(messages),
                question=row["problem"],
            )
            result = await strategy.run(ctx, params)
            correct += await grader.is_equivalent(row["answer"], result.answer)
            generated += result.usage.generated_tokens
            verifier += result.usage.verifier_tokens
            flops += result.usage.total_flops
            print(f"\r{label}: {number}/{len(rows)} correct={correct}", end="", flush=True)
        print()
        report["strategies"][label] = {
            "accuracy": round(correct / len(rows), 4),
            "correct": correct,
            "generated_tokens": generated,
            "verifier_tokens": verifier,
            "tflops": round(flops / 1e12, 3),
            "wall_s": round(time.perf_counter() - started, 1),
        }
    fixed = report["strategies"].get("self_consistency")
    adaptive = report["strategies"].get("self_consistency(adaptive)")
    if fixed and adaptive:
        report["adaptive_token_saving"] = round(
            1 - adaptive["generated_tokens"] / fixed["generated_tokens"], 4
        )
    grader.close()
    await engine.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: embedded SmolLM2)")
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--only", help="comma-separated setting labels")
    parser.add_argument("--out", help="write the JSON report here too")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    report = asyncio.run(run(args))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
