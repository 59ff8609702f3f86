"""Grader figures: MATH-500 self-agreement and equivalence-grouping time for N answers.

Agreement: every MATH-500 gold answer is graded against the last boxed answer of its own
reference solution; a grader that disagrees with the dataset's own solutions would
mis-score models. It is measured twice: through `is_equivalent` (string fast path
first), and with every pair forced through canonical keys and math-verify.

Grouping: N answers spread over a few distinct forms, grouped as self-consistency does
on every request: cold (values never seen, empty caches) and warm (the same answers
again), p50 over many repetitions; and the first request of a freshly started grader.

    .venv/bin/python -m lab.grading --n 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections.abc import Callable

from ttscale.benchmarks.datasets import DATA_DIR
from ttscale.verifiers.extraction import extract_boxed
from ttscale.verifiers.math_grader import MathGrader
from ttscale.verifiers.math_worker import check_pair
from ttscale.verifiers.normalize import normalize_answer


def equivalent_by_keys(gold: str, prediction: str) -> bool:
    """The grader's equivalence without its string match: both answers are parsed and
    keyed, and math-verify decides what the keys cannot (the sympy path alone). Runs in
    a grading worker."""
    a, b = normalize_answer(gold), normalize_answer(prediction)
    return bool(a and b) and check_pair(a, b)


async def agreement(grader: MathGrader, rows: list[dict], *, through_sympy: bool) -> dict:
    """`through_sympy` skips the string fast path: every answer is parsed into its
    canonical key, and math-verify decides the pairs the keys cannot."""
    started = time.perf_counter()
    extracted = [extract_boxed(row["solution"]) for row in rows]

    async def check(gold: str, pred: str | None) -> bool:
        if not through_sympy:
            return await grader.is_equivalent(gold, pred)
        if pred is None:
            return False
        return await grader._run(equivalent_by_keys, gold, pred)

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


def non_numeric_forms(rng: random.Random) -> list[str]:
    """Ten distinct non-numeric spellings (6 classes), with values drawn afresh so that
    no cache (grader, worker, parser) has seen them: pairs, a set, polynomials,
    inequalities and intervals, as models write them for MATH problems."""
    a, b = rng.sample(range(2, 10_000), 2)
    return [
        f"({a},{b})", f"\\left( {a}, {b} \\right)", f"({b},{a})", f"\\{{{a},{b}\\}}",
        f"x^2+{2 * a}x+{a * a}", f"(x+{a})^2", f"x > {a}", f"({a},\\infty)",
        f"[{a},{b}]", f"{a}\\sqrt{{{b}}}",
    ]  # fmt: skip


def trig_forms(rng: random.Random) -> list[str]:
    """Eight forms of which two are a trigonometric identity: keys cannot decide those,
    so this case measures the math-verify path."""
    a, b = rng.sample(range(2, 10_000), 2)
    return [
        f"({a},{b})", f"({b},{a})", f"\\{{{a},{b}\\}}", f"x^2+{a}", f"x > {a}",
        f"({a},\\infty)", f"{a}\\cos 2x", f"{a}\\cos^2 x-{a}\\sin^2 x",
    ]  # fmt: skip


def identical_numbers(rng: random.Random) -> list[str]:
    return [str(rng.randint(10**6, 10**7))]


CASES: dict[str, Callable[[random.Random], list[str]]] = {
    "64 answers, 10 non-numeric forms": non_numeric_forms,
    "64 answers, 8 forms incl. a trig identity": trig_forms,
    "64 identical numbers": identical_numbers,
}


def spread(forms: list[str], n: int, rng: random.Random) -> list[str]:
    """n answers using every form at least once, in random order."""
    answers = forms + [rng.choice(forms) for _ in range(n - len(forms))]
    rng.shuffle(answers)
    return answers


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def time_grouping(grader: MathGrader, answers: list[str]) -> tuple[float, list]:
    started = time.perf_counter()
    labels = await grader.group(answers)
    return time.perf_counter() - started, labels


async def grouping_case(grader: MathGrader, make, n: int, repeats: int, seed: int) -> dict:
    """Cold: values never seen before and empty grader caches (what a new request meets
    on a running server). Warm: the same answers again (caches filled)."""
    cold, warm, classes = [], [], set()
    for repeat in range(repeats):
        rng = random.Random(seed * 1000 + repeat)
        answers = spread(make(rng), n, rng)
        elapsed, labels = await time_grouping(grader, answers)
        cold.append(elapsed)
        again, labels_again = await time_grouping(grader, answers)
        assert labels_again == labels
        warm.append(again)
        classes.add(len(set(labels)))
    return {
        "repeats": repeats,
        "cold_ms_p50": round(1000 * statistics.median(cold), 1),
        "cold_ms_p90": round(1000 * percentile(cold, 0.9), 1),
        "warm_ms_p50": round(1000 * statistics.median(warm), 2),
        "classes": sorted(classes),
    }


async def fresh_grader_case(make, n: int, repeats: int, workers: int) -> dict:
    """The first request a newly started (and warmed-up) grader serves."""
    times = []
    for repeat in range(repeats):
        rng = random.Random(10**6 + repeat)
        grader = MathGrader(workers=workers)
        await grader.warm_up()
        elapsed, _ = await time_grouping(grader, spread(make(rng), n, rng))
        times.append(elapsed)
        grader.close()
    return {"repeats": repeats, "first_request_ms_p50": round(1000 * statistics.median(times), 1)}


async def grouping(n: int, repeats: int, fresh_repeats: int, workers: int) -> dict:
    grader = MathGrader(workers=workers)
    await grader.warm_up()
    result = {}
    for seed, (name, make) in enumerate(CASES.items()):
        result[name] = await grouping_case(grader, make, n, repeats, seed)
    result["sympy_checks"] = grader.sympy_checks
    grader.close()
    if fresh_repeats:
        first = next(iter(CASES))
        result[f"{first}, fresh grader"] = await fresh_grader_case(
            CASES[first], n, fresh_repeats, workers
        )
    return result


async def main_async(args: argparse.Namespace) -> dict:
    rows = [json.loads(line) for line in (DATA_DIR / "math500.jsonl").open()]
    if args.limit:
        rows = rows[: args.limit]
    grader = MathGrader(workers=args.workers)
    await grader.warm_up()
    result = {
        "agreement": await agreement(grader, rows, through_sympy=False),
        "agreement_through_keys": await agreement(grader, rows, through_sympy=True),
        "string_matches": grader.string_matches,
        "sympy_checks": grader.sympy_checks,
        "timeouts": grader.timeouts,
    }
    grader.close()
    result["grouping"] = await grouping(args.n, args.repeats, args.fresh_repeats, args.workers)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="answers per grouping")
    parser.add_argument("--repeats", type=int, default=30, help="cold/warm repetitions")
    parser.add_argument(
        "--fresh-repeats", type=int, default=5, help="newly started graders (seconds each)"
    )
    parser.add_argument("--limit", type=int, help="first K MATH-500 problems only")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
