"""Running the grid: every setting on every problem, graded, recorded, resumable.

Jobs run problem by problem (all settings of a problem before the next), so a run cut
short still compares every setting on the same problems. `concurrency` jobs are in
flight at once; the engine batches their samples.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ttscale.verifiers.math_grader import MathGrader

from .backends import Backend, ProblemTooLong, RequestRejected
from .datasets import BenchError, Problem
from .grid import Setting, problem_seed, with_seed
from .progress import Progress
from .records import Record, RecordWriter, SampleTrace, done_keys, read_records, write_grid

logger = logging.getLogger("ttscale.bench")

DEFAULT_PROMPT = (
    "Solve the following math problem step by step. Put the final answer in \\boxed{}.\n\n{problem}"
)


def render_prompt(template: str, problem: Problem) -> list[dict[str, str]]:
    """One user message; the model's chat template does the rest. `{problem}` is the
    only placeholder (so LaTeX braces in a template need no escaping)."""
    return [{"role": "user", "content": template.replace("{problem}", problem.problem)}]


def check_template(template: str) -> None:
    if "{problem}" not in template:
        raise BenchError("the prompt template must contain {problem}")


class GivingUp(BenchError):
    """Failures keep coming (the engine or server is down): stop instead of burning
    through every remaining job."""


@dataclass
class RunOutcome:
    done: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)


async def grade(
    grader: MathGrader, gold: str, answer: str | None, candidates: Sequence[dict[str, Any]]
) -> tuple[bool, list[SampleTrace]]:
    """Is the pick right, and each sample's answer class and correctness (one grader
    call per class, not per sample)."""
    answers = [c.get("answer") for c in candidates]
    classes = await grader.group(answers)
    class_correct: dict[int, bool] = {}
    for answer_text, label in zip(answers, classes, strict=True):
        if label is not None and label not in class_correct:
            class_correct[label] = await grader.is_equivalent(gold, answer_text)
    traces = [
        SampleTrace(
            index=c.get("index"),
            answer=c.get("answer"),
            answer_class=label,
            correct=class_correct.get(label, False) if label is not None else False,
            tokens=c["tokens"],
            reasoning_tokens=c.get("reasoning_tokens", 0),
            answer_source=c.get("answer_source"),
            finish_reason=c["finish_reason"],
            temperature=c.get("temperature"),
            mean_entropy=c.get("mean_entropy"),
            mean_logprob=c.get("mean_logprob"),
            scores=_finite(c.get("scores") or {}),
        )
        for c, label in zip(candidates, classes, strict=True)
    ]
    return await grader.is_equivalent(gold, answer), traces


def _finite(scores: dict[str, Any]) -> dict[str, Any]:
    """Scores without infinities or NaN (JSON cannot carry them; a rule cannot use them)."""

    def ok(value: Any) -> bool:
        values = value if isinstance(value, list) else [value]
        return all(isinstance(v, int | float) and math.isfinite(v) for v in values)

    return {name: value for name, value in scores.items() if ok(value)}


def make_record(
    problem: Problem,
    setting: Setting,
    evidence: dict[str, Any],
    correct: bool,
    samples: list[SampleTrace],
    latency_s: float,
    params: dict[str, Any],
) -> Record:
    spent = evidence["budget"]["spent"]
    return Record(
        dataset=problem.dataset,
        problem_id=problem.id,
        setting=setting.label,
        family=setting.family,
        strategy=setting.strategy,
        n=setting.n,
        params=params,
        gold=problem.answer,
        answer=evidence.get("answer"),
        correct=correct,
        stop_reason=evidence["stop_reason"],
        prompt_tokens=spent["prompt_tokens"],
        cached_prompt_tokens=spent["cached_prompt_tokens"],
        generated_tokens=spent["generated_tokens"],
        reasoning_tokens=spent.get("reasoning_tokens", 0),
        aborted_tokens=spent["aborted_tokens"],
        verifier_tokens=spent["verifier_tokens"],
        flops=spent["total_flops"],
        verifier_flops=spent["verifier_flops"],
        latency_s=round(latency_s, 4),
        samples=samples,
    )


def _without_seed(params: dict[str, Any]) -> dict[str, Any]:
    return {**params, "sampling": {**params.get("sampling", {}), "seed": None}}


def check_same_params(recorded: Sequence[Record], settings: Sequence[Setting]) -> None:
    """A label recorded with other parameters is another setting: resuming would mix them."""
    by_label = {s.label: _without_seed(s.params) for s in settings}
    for record in recorded:
        wanted = by_label.get(record.setting)
        if wanted is not None and _without_seed(record.params) != wanted:
            raise BenchError(
                f"setting {record.setting!r} was recorded here with other parameters; "
                "give it another label (LABEL=STRATEGY?...) or use another --out"
            )


class Runner:
    def __init__(
        self,
        backend: Backend,
        grader: MathGrader,
        out_dir: Path,
        *,
        prompt_template: str = DEFAULT_PROMPT,
        base_seed: int = 0,
        concurrency: int = 1,
        progress_stream: TextIO | None = None,
        max_failures_in_a_row: int = 5,
    ) -> None:
        check_template(prompt_template)
        self.backend = backend
        self.grader = grader
        self.out_dir = out_dir
        self.prompt_template = prompt_template
        self.base_seed = base_seed
        self.concurrency = max(1, concurrency)
        self.progress_stream = progress_stream
        self.max_failures_in_a_row = max_failures_in_a_row

    async def run_one(self, problem: Problem, setting: Setting) -> Record:
        params = with_seed(setting, problem_seed(self.base_seed, problem.id))
        solved = await self.backend.solve(
            render_prompt(self.prompt_template, problem), setting, params
        )
        evidence, latency = solved.evidence, solved.latency_s
        correct, samples = await grade(
            self.grader, problem.answer, evidence.get("answer"), evidence["candidates"]
        )
        return make_record(problem, setting, evidence, correct, samples, latency, params)

    async def run(self, problems: Sequence[Problem], settings: Sequence[Setting]) -> RunOutcome:
        """Run what is not recorded yet. Cancelling this (Ctrl-C) aborts the jobs in
        flight; everything recorded before stays."""
        recorded = read_records(self.out_dir)
        check_same_params(recorded, settings)
        write_grid(self.out_dir, settings)
        finished = done_keys(recorded)
        jobs = [
            (problem, setting)
            for problem in problems
            for setting in settings
            if (setting.label, problem.dataset, problem.id) not in finished
        ]
        total = len(problems) * len(settings)
        outcome = RunOutcome(skipped=total - len(jobs))
        progress = Progress(total, already_done=outcome.skipped, stream=self.progress_stream)
        writer = RecordWriter(self.out_dir)
        pending = list(reversed(jobs))
        # failures in a row, over all jobs (engine or server down) and per setting (one
        # setting that always fails, between settings that work)
        in_a_row: Counter[str] = Counter()

        async def work() -> None:
            while pending:
                problem, setting = pending.pop()
                try:
                    record = await self.run_one(problem, setting)
                except (RequestRejected, GivingUp, asyncio.CancelledError):
                    raise
                except Exception as exc:
                    message = f"{problem.dataset}/{problem.id} {setting.label}: {exc}"
                    logger.warning("failed: %s", message)
                    outcome.failures.append(message)
                    progress.fail()
                    if isinstance(exc, ProblemTooLong):
                        continue
                    in_a_row.update(["", setting.label])
                    if max(in_a_row.values()) >= self.max_failures_in_a_row:
                        raise GivingUp(
                            f"{max(in_a_row.values())} jobs failed in a row, "
                            f"the last with: {message}"
                        ) from exc
                    continue
                in_a_row[""] = in_a_row[setting.label] = 0
                writer.write(record)
                outcome.done += 1
                progress.advance(correct=record.correct, tokens=record.generated_tokens)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.concurrency, len(jobs))):
                    group.create_task(work())
        except* (RequestRejected, GivingUp) as stopped:
            raise stopped.exceptions[0] from None
        finally:
            progress.close()
            writer.close()
        return outcome
