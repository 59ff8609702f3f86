"""Small hand-made benchmark records: every statistic on them can be worked out by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ttscale.benchmarks.grid import SamplingConfig
from ttscale.benchmarks.records import Record, RecordWriter, RunConfig, SampleTrace, open_run


def trace(
    answer: str | None,
    label: int | None,
    correct: bool,
    *,
    tokens: int = 10,
    entropy: float | None = 1.0,
    logprob: float | None = -1.0,
    scores: dict[str, Any] | None = None,
) -> SampleTrace:
    return SampleTrace(
        answer=answer,
        answer_class=label,
        correct=correct,
        tokens=tokens,
        finish_reason="stop",
        mean_entropy=entropy,
        mean_logprob=logprob,
        scores=scores or {},
    )


def record(
    problem_id: str,
    family: str,
    n: int,
    correct: bool,
    samples: list[SampleTrace] | None = None,
    *,
    dataset: str = "gsm8k",
    strategy: str | None = None,
    params: dict[str, Any] | None = None,
    tokens: int | None = None,
    latency_s: float = 1.0,
) -> Record:
    samples = samples if samples is not None else [trace("1", 0, correct)] * n
    generated = tokens if tokens is not None else sum(s.tokens for s in samples)
    return Record(
        dataset=dataset,
        problem_id=problem_id,
        setting=f"{family}@{n}",
        family=family,
        strategy=strategy or family,
        n=n,
        params=params or {},
        gold="1",
        answer="1" if correct else "2",
        correct=correct,
        stop_reason="completed",
        prompt_tokens=20,
        cached_prompt_tokens=0,
        generated_tokens=generated,
        aborted_tokens=0,
        verifier_tokens=0,
        flops=1e9 * generated,
        latency_s=latency_s,
        samples=samples,
    )


def three_right_two_wrong() -> list[SampleTrace]:
    """Class 0 ("18", right) three times, class 1 ("20", wrong) twice; the wrong samples
    are the confident ones (low entropy, high logprob)."""
    right = [trace("18", 0, True, entropy=2.0, logprob=-2.0) for _ in range(3)]
    wrong = [trace("20", 1, False, entropy=0.1, logprob=-0.1) for _ in range(2)]
    return right + wrong


def write_run(directory: Path, records: list[Record]) -> str:
    """A run directory holding `records`, as `bench run` leaves one; its path as a string."""
    config = RunConfig(
        model="m", backend="in-process", prompt_template="{problem}", sampling=SamplingConfig()
    )
    open_run(directory, config)
    writer = RecordWriter(directory)
    for item in records:
        writer.write(item)
    writer.close()
    return str(directory)


def small_run(directory: Path) -> Path:
    """Two problems under two settings, with the report's summary and plots: p1 (gold
    18) right at N=1 and at N=5 (three of five samples say 18); p2 (gold 7) wrong at N=1
    (9) and right at N=5 (7 three times, 9 twice)."""
    from ttscale.benchmarks.report import build_report

    def graded(item: Record, gold: str, answer: str) -> Record:
        return item.model_copy(update={"gold": gold, "answer": answer})

    sevens = [trace(a, 0 if a == "7" else 1, a == "7") for a in ["7", "9", "7", "7", "9"]]
    write_run(directory, [
        graded(record("p1", "self_consistency", 1, True, [trace("18", 0, True)]), "18", "18"),
        graded(record("p1", "self_consistency", 5, True, three_right_two_wrong()), "18", "18"),
        graded(record("p2", "self_consistency", 1, False, [trace("9", 0, False)]), "7", "9"),
        graded(record("p2", "self_consistency", 5, True, sevens), "7", "7"),
    ])  # fmt: skip
    build_report(directory)
    return directory
