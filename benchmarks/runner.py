"""Running the grid: every setting on every problem, graded, recorded, resumable.

Jobs run problem by problem (all settings of a problem before the next), so a run cut
short still compares every setting on the same problems. `concurrency` jobs are in
flight at once; the engine batches their samples. A problem is graded as its dataset
declares: math answers by math equivalence, structured ones (an option's letter) by
exact equality.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ttscale.verifiers.math_grader import MathGrader
from ttscale.verifiers.structured import AnswerFormat, exact_classes

from .answers import with_answer_format
from .backends import Backend, ProblemTooLong, RequestRejected
from .datasets import DATASETS, MATH_PROMPT, BenchError, Problem
from .grid import Setting, problem_seed, with_seed
from .progress import Progress
from .records import Record, RecordWriter, SampleTrace, done_keys, read_records, write_grid

logger = logging.getLogger("ttscale.bench")

DEFAULT_PROMPT = MATH_PROMPT
"""The math datasets' prompt (each dataset declares its own: `Dataset.prompt_template`)."""


def render_prompt(template: str, problem: Problem) -> list[dict[str, str]]:
    """One user message; the model's chat template does the rest. `{problem}` is the
    only placeholder (so LaTeX braces in a template need no escaping); it stands for the
    problem with its lettered options, if it has any."""
    return [{"role": "user", "content": template.replace("{problem}", problem.text)}]


def run_prompt_template(problems: Sequence[Problem], override: str | None) -> str | dict[str, str]:
    """The prompt a run records: the user's template, else the datasets' own, as one
    string when they share it and per dataset when they differ."""
    if override is not None:
        return override
    by_dataset = {p.dataset: p.prompt_template for p in problems}
    distinct = set(by_dataset.values())
    return distinct.pop() if len(distinct) == 1 else by_dataset


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
    grader: MathGrader,
    gold: str,
    answer: str | None,
    candidates: Sequence[dict[str, Any]],
    answer_format: AnswerFormat | None = None,
) -> tuple[bool, list[SampleTrace]]:
    """Is the pick right, and each sample's answer class and correctness. Math answers
    (no format, or boxed) by math equivalence, one grader call per class, not per sample;
    structured answers (an option's letter) by exact equality with the gold answer."""
    answers = [c.get("answer") for c in candidates]
    if answer_format is None or answer_format.by_math:
        classes = await grader.group(answers)
        class_correct: dict[int, bool] = {}
        for answer_text, label in zip(answers, classes, strict=True):
            if label is not None and label not in class_correct:
                class_correct[label] = await grader.is_equivalent(gold, answer_text)
        picked_correct = await grader.is_equivalent(gold, answer)
    else:
        classes = exact_classes(answers)
        class_correct = {
            label: text == gold
            for text, label in zip(answers, classes, strict=True)
            if label is not None
        }
        picked_correct = answer is not None and answer == gold
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
    return picked_correct, traces


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


def check_same_params(
    recorded: Sequence[Record],
    settings: Sequence[Setting],
    formats: Mapping[str, AnswerFormat | None] | None = None,
    *,
    constrain: bool = False,
) -> None:
    """A label recorded with other parameters is another setting: resuming would mix them.
    A record is compared with the parameters its dataset's answer format gives the
    setting (`formats`, by dataset; none for math)."""
    by_label = {s.label: s.params for s in settings}
    for record in recorded:
        params = by_label.get(record.setting)
        if params is None:
            continue
        answer_format = (formats or {}).get(record.dataset)
        wanted = with_answer_format(params, answer_format, constrain=constrain)
        if _without_seed(record.params) != _without_seed(wanted):
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
        prompt_template: str | None = None,
        constrain: bool = False,
        base_seed: int = 0,
        concurrency: int = 1,
        progress_stream: TextIO | None = None,
        max_failures_in_a_row: int = 5,
    ) -> None:
        """`prompt_template`: one template for every problem (None: each problem's
        dataset's own); `constrain`: multiple-choice problems' samples may only be one
        option's label (structured outputs)."""
        if prompt_template is not None:
            check_template(prompt_template)
        self.backend = backend
        self.grader = grader
        self.out_dir = out_dir
        self.prompt_template = prompt_template
        self.constrain = constrain
        self.base_seed = base_seed
        self.concurrency = max(1, concurrency)
        self.progress_stream = progress_stream
        self.max_failures_in_a_row = max_failures_in_a_row

    async def run_one(self, problem: Problem, setting: Setting) -> Record:
        seeded = with_seed(setting, problem_seed(self.base_seed, problem.id))
        params = with_answer_format(seeded, problem.answer_format, constrain=self.constrain)
        template = (
            self.prompt_template if self.prompt_template is not None else problem.prompt_template
        )
        solved = await self.backend.solve(render_prompt(template, problem), setting, params)
        evidence, latency = solved.evidence, solved.latency_s
        correct, samples = await grade(
            self.grader, problem.answer, evidence.get("answer"), evidence["candidates"],
            problem.answer_format,
        )  # fmt: skip
        return make_record(problem, setting, evidence, correct, samples, latency, params)

    async def run(self, problems: Sequence[Problem], settings: Sequence[Setting]) -> RunOutcome:
        """Run what is not recorded yet. Cancelling this (Ctrl-C) aborts the jobs in
        flight; everything recorded before stays."""
        recorded = read_records(self.out_dir)
        formats = {name: spec.answer_format for name, spec in DATASETS.items()}
        formats.update({p.dataset: p.answer_format for p in problems})
        check_same_params(recorded, settings, formats, constrain=self.constrain)
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
