"""Grader figures: MATH-500 self-agreement and equivalence-grouping time for N answers.

Agreement: every MATH-500 gold answer is graded against the last boxed answer of its own
reference solution; a grader that disagrees with the dataset's own solutions would
mis-score models. Grouping: N answers drawn from realistic spellings of a few values,
grouped cold (empty caches) and warm, as self-consistency does on every request.

    .venv/bin/python -m benchmarks.grading --n 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path

from ttscale.verifiers import math_worker
from ttscale.verifiers.extraction import extract_boxed
from ttscale.verifiers.math_grader import MathGrader

DATA = Path(__file__).parent / "data"


async def agreement(grader: MathGrader, rows: list[dict], *, through_sympy: bool) -> dict:
    """`through_sympy` skips the string fast path: every pair goes through math-verify."""
    started = time.perf_counter()
    extracted = [extract_boxed(row["solution"]) for row in rows]

    async def check(gold: str, pred: str | None) -> bool:
        if not through_sympy:
            return await grader.is_equivalent(gold, pred)
        if pred is None:
            return False
        return await grader._run(math_worker.equivalent, gold, pred)

    verdicts = await asyncio.gather(
        *(check(row["answer"], pred) for row, pred in zip(rows, extracted, strict=True))
    )
    elapsed = time.perf_counter() - started
    disagreements = [
        {"id": row["id"], "gold": row["answer"], "solution_box": pred}
        for row, pred, ok in zip(rows, extracted, verdicts, strict=True)
        if not ok
    ]
    return {
        "problems": len(rows),
        "agree": sum(verdicts),
        "agreement": round(sum(verdicts) / len(rows), 4),
        "seconds": round(elapsed, 2),
        "disagreements": disagreements,
    }


SPELLINGS = [
    ["\\frac{1}{2}", "0.5", "1/2", "\\dfrac{1}{2}", "\\frac{2}{4}", ".5"],
    ["3\\sqrt{2}", "\\sqrt{18}", "3 \\sqrt{2}"],
    ["(1,2)", "\\left(1, 2\\right)", "(1, 2)"],
    ["x=7", "7", "7.0", "\\text{7}"],
    ["12", "12.00", "012"],
]


def sample_answers(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    answers = []
    for _ in range(n):
        if rng.random() < 0.2:  # a fifth of samples are one-off wrong answers
            answers.append(str(rng.randint(100, 10_000)))
        else:
            answers.append(rng.choice(rng.choice(SPELLINGS)))
    return answers


async def grouping(n: int, repeats: int) -> dict:
    cold, warm = [], []
    for seed in range(repeats):
        grader = MathGrader()
        await grader.warm_up()
        answers = sample_answers(n, seed)
        started = time.perf_counter()
        labels = await grader.group(answers)
        cold.append(time.perf_counter() - started)
        started = time.perf_counter()
        assert await grader.group(answers) == labels
        warm.append(time.perf_counter() - started)
        grader.close()
    return {
        "n": n,
        "repeats": repeats,
        "cold_ms_median": round(1000 * statistics.median(cold), 1),
        "warm_ms_median": round(1000 * statistics.median(warm), 2),
        "classes_last_run": len({label for label in labels if label is not None}),
    }


async def main_async(args: argparse.Namespace) -> dict:
    rows = [json.loads(line) for line in (DATA / "math500.jsonl").open()]
    if args.limit:
        rows = rows[: args.limit]
    grader = MathGrader(workers=args.workers)
    await grader.warm_up()
    result = {
        "agreement": await agreement(grader, rows, through_sympy=False),
        "agreement_through_math_verify": await agreement(grader, rows, through_sympy=True),
        "string_matches": grader.string_matches,
        "sympy_checks": grader.sympy_checks,
        "timeouts": grader.timeouts,
    }
    grader.close()
    result["grouping"] = await grouping(args.n, args.repeats)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="answers per grouping")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--limit", type=int, help="first K MATH-500 problems only")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
