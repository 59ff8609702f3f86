"""Multiple-choice datasets in `ttscale bench`: the dataset declares its answer format, the
settings vote on option letters, a pick is right when it is the gold letter (no math
grading), `--constrain` lets the engine write nothing but a letter, and math datasets run
exactly as before. The scripted engine gives exact control; the last test runs the real
engine."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Any

import pytest

from ttscale.benchmarks.answers import with_answer_format
from ttscale.benchmarks.backends import InProcessBackend
from ttscale.benchmarks.cli import main as bench_main
from ttscale.benchmarks.datasets import (
    CHOICE_PROMPT,
    DATA_DIR,
    DATASETS,
    LETTERS,
    BenchError,
    Problem,
    Selection,
    load_dataset,
    load_problems,
)
from ttscale.benchmarks.grid import SamplingConfig, build_grid, problem_seed
from ttscale.benchmarks.records import (
    RecordWriter,
    RunConfig,
    open_run,
    read_records,
    write_grid,
)
from ttscale.benchmarks.report import build_report
from ttscale.benchmarks.runner import (
    DEFAULT_PROMPT,
    Runner,
    grade,
    render_prompt,
    run_prompt_template,
)
from ttscale.strategies.base import Verifiers
from ttscale.strategies.registry import discover
from ttscale.strategies.service import Service

from .support.bench_fixtures import record, trace
from .support.fakes import Scripted, ScriptedEngine
from .support.servers import BorrowedEngine

CHOICE = "mmlu-elementary-math"
SAMPLING = SamplingConfig(temperature=0.7, max_tokens=40)


def _choice(problem_id: str, problem: str, choices: tuple[str, ...], answer: str) -> Problem:
    return Problem(
        dataset="toy-choice", id=problem_id, problem=problem, choices=choices, answer=answer,
        answer_format=LETTERS, prompt_template=CHOICE_PROMPT,
    )  # fmt: skip


TWO_PLUS_TWO = _choice("four", "What is 2 + 2?", ("3", "4", "5", "6"), "B")
SEVEN_TIMES_SIX = _choice("product", "What is 7 x 6?", ("36", "42", "48", "54"), "B")
NINE_PLUS_NINE = Problem(dataset="toy", id="easy", problem="What is 9 + 9?", answer="18")


def _script(prompt: list[int], spec: Any, index: int) -> Scripted:
    """2 + 2: every sample answers B (right). 7 x 6: sample seeds alternate "C" (wrong)
    and a sentence naming D, so the vote is on letters, never on numbers. Math: 18.
    Constrained: the first or second option by seed parity."""
    text = "".join(chr(t) for t in prompt)
    seed = spec.sample_seed(index)
    if spec.structured_outputs is not None:
        return Scripted(spec.structured_outputs.choice[seed % 2])  # A or B
    if "2 + 2" in text:
        return Scripted("B")
    if "7 x 6" in text:
        return Scripted("C" if seed % 2 == 0 else "I think the answer is D.")
    return Scripted("So \\boxed{18}.")


class NoMathGrader:
    """A grader that fails the test if anything grades by math equivalence."""

    tally = None

    def for_request(self, deadline_s: float) -> NoMathGrader:
        return self

    async def group(self, answers: Any) -> Any:
        raise AssertionError(f"math grouping of {answers}")

    async def is_equivalent(self, gold: Any, prediction: Any) -> bool:
        raise AssertionError(f"math grading of {prediction} against {gold}")


def _runner(engine: ScriptedEngine, grader: Any, out: Path, **kwargs: Any) -> Runner:
    backend = InProcessBackend(Service(engine, Verifiers(grader), discover()))
    return Runner(backend, grader, out, progress_stream=io.StringIO(), **kwargs)


def _grid(*specs: str, budgets: tuple[int, ...] = (1, 2)):
    return build_grid(list(specs), list(budgets), SAMPLING, discover())


def test_the_choice_dataset_loads_with_its_format_its_prompt_and_lettered_options():
    problems = load_dataset(CHOICE)
    assert len(problems) == 378
    assert len({p.id for p in problems}) == 378
    assert all(p.answer_format == LETTERS and p.prompt_template == CHOICE_PROMPT for p in problems)
    assert all(len(p.choices) == 4 and p.answer in {"A", "B", "C", "D"} for p in problems)
    first = problems[0]
    assert (first.id, first.answer) == ("mmlu-elementary-math-0", "C")
    (message,) = render_prompt(first.prompt_template, first)
    assert message["content"] == (
        "Answer the following multiple-choice question.\n\n"
        "What is the value of p in 24 = 2p?\n\nA. p = 4\nB. p = 8\nC. p = 12\nD. p = 24\n\n"
        "Answer with the letter of the correct option only."
    )
    # math datasets declare nothing: their prompt and problem text are as they were
    gsm8k = load_dataset("gsm8k")[0]
    assert gsm8k.answer_format is None and gsm8k.choices == ()
    assert gsm8k.prompt_template == DEFAULT_PROMPT and gsm8k.text == gsm8k.problem


def test_the_vendored_file_is_the_one_its_provenance_describes():
    provenance = (DATA_DIR / "PROVENANCE.md").read_text()
    file = DATASETS[CHOICE].file
    row = re.search(rf"^\| {re.escape(file)} \| (\d+) \| ([0-9a-f]{{64}}) \|$", provenance, re.M)
    assert row is not None
    assert int(row.group(1)) == len(load_dataset(CHOICE))
    assert hashlib.sha256((DATA_DIR / file).read_bytes()).hexdigest() == row.group(2)


def test_a_choice_problem_has_one_option_per_letter_and_a_letter_for_its_answer():
    with pytest.raises(ValueError, match="3 choices for 4 labels"):
        _choice("short", "?", ("1", "2", "3"), "A")
    with pytest.raises(ValueError, match="the answer '4' is not one of"):
        _choice("numeric", "?", ("1", "2", "3", "4"), "4")


async def test_settings_vote_on_letters_and_a_pick_is_right_only_when_it_is_the_gold_letter(
    tmp_path,
):
    engine = ScriptedEngine(_script)
    runner = _runner(engine, NoMathGrader(), tmp_path)
    grid = _grid("self_consistency", "inverse_entropy")
    outcome = await runner.run([TWO_PLUS_TWO, SEVEN_TIMES_SIX], grid)
    assert (outcome.done, outcome.failures) == (8, [])

    records = {r.key: r for r in read_records(tmp_path)}
    four = records[("self_consistency@2", "toy-choice", "four")]
    assert (four.answer, four.gold, four.correct) == ("B", "B", True)
    assert [(s.answer, s.answer_class, s.correct) for s in four.samples] == [("B", 0, True)] * 2
    product = records[("self_consistency@2", "toy-choice", "product")]
    assert sorted(s.answer for s in product.samples) == ["C", "D"]  # D read from a sentence
    assert product.answer in {"C", "D"} and product.correct is False
    assert all(not s.correct for s in product.samples)
    assert len({s.answer_class for s in product.samples}) == 2
    # every setting got the dataset's format as its `answer`, and nothing else changed
    for r in records.values():
        assert r.params["answer"] == {"kind": "choice", "options": ["A", "B", "C", "D"]}
        assert "structured_outputs" not in r.params["sampling"]
    # the prompt asked for a letter and listed the options
    prompts = {"".join(map(chr, prompt)) for prompt, _ in engine.calls}
    assert any("B. 4\nC. 5" in p and p.endswith("correct option only.") for p in prompts)


async def test_grading_a_choice_pick_is_exact_equality():
    candidates = [
        {"answer": "B", "tokens": 1, "finish_reason": "stop"},
        {"answer": None, "tokens": 5, "finish_reason": "length"},
        {"answer": "C", "tokens": 1, "finish_reason": "stop"},
        {"answer": "B", "tokens": 1, "finish_reason": "stop"},
    ]
    correct, samples = await grade(NoMathGrader(), "B", "B", candidates, LETTERS)
    assert correct
    assert [(s.answer_class, s.correct) for s in samples] == [
        (0, True), (None, False), (1, False), (0, True),
    ]  # fmt: skip
    assert (await grade(NoMathGrader(), "B", "C", candidates, LETTERS))[0] is False
    assert (await grade(NoMathGrader(), "B", None, candidates, LETTERS))[0] is False


async def test_a_setting_that_names_its_own_answer_keeps_it_and_is_still_graded_by_letter(
    tmp_path,
):
    engine = ScriptedEngine(lambda prompt, spec, index: Scripted("Answer: (B)"))
    grid = _grid(r"self_consistency?answer.kind=regex&answer.pattern=\(([A-D])\)", budgets=(1,))
    await _runner(engine, NoMathGrader(), tmp_path).run([TWO_PLUS_TWO], grid)
    (only,) = read_records(tmp_path)
    assert only.params["answer"] == {"kind": "regex", "pattern": r"\(([A-D])\)"}
    assert (only.answer, only.correct) == ("B", True)


async def test_constrain_sends_the_options_to_the_engine_for_choice_problems_only(grader, tmp_path):
    engine = ScriptedEngine(_script)
    runner = _runner(engine, grader, tmp_path, constrain=True)
    await runner.run([TWO_PLUS_TWO, NINE_PLUS_NINE], _grid("self_consistency", budgets=(2,)))
    for prompt, spec in engine.calls:
        if "2 + 2" in "".join(map(chr, prompt)):
            assert spec.structured_outputs.choice == ("A", "B", "C", "D")
        else:  # the math problem's samples are free
            assert spec.structured_outputs is None
    records = {r.problem_id: r for r in read_records(tmp_path)}
    four = records["four"]
    assert four.params["sampling"]["structured_outputs"] == {"choice": ["A", "B", "C", "D"]}
    assert sorted(s.answer for s in four.samples) == ["A", "B"]  # seeds s and s + 1
    assert [s.correct for s in sorted(four.samples, key=lambda s: s.answer)] == [False, True]
    assert "structured_outputs" not in records["easy"].params["sampling"]
    assert records["easy"].correct


async def test_math_problems_beside_choice_ones_run_exactly_as_before(grader, tmp_path):
    engine = ScriptedEngine(_script)
    grid = _grid("self_consistency", budgets=(2,))
    await _runner(engine, grader, tmp_path).run([NINE_PLUS_NINE, TWO_PLUS_TWO], grid)
    records = {r.problem_id: r for r in read_records(tmp_path)}
    easy = records["easy"]
    seeded = {**grid[0].params, "sampling": {**grid[0].params["sampling"]}}
    seeded["sampling"]["seed"] = problem_seed(0, "easy")
    assert easy.params == seeded  # no `answer`, no constraint
    assert easy.correct and easy.answer == "18"
    math_prompt = next(
        "".join(map(chr, p)) for p, _ in engine.calls if "9 + 9" in "".join(map(chr, p))
    )
    assert math_prompt == DEFAULT_PROMPT.replace("{problem}", "What is 9 + 9?")
    assert with_answer_format(grid[0].params, None, constrain=True) is grid[0].params
    # the run records the prompt of each dataset where they differ, one string otherwise
    assert run_prompt_template([NINE_PLUS_NINE, TWO_PLUS_TWO], None) == {
        "toy": DEFAULT_PROMPT, "toy-choice": CHOICE_PROMPT,
    }  # fmt: skip
    assert run_prompt_template([TWO_PLUS_TWO, SEVEN_TIMES_SIX], None) == CHOICE_PROMPT
    assert run_prompt_template([NINE_PLUS_NINE, TWO_PLUS_TWO], "{problem}") == "{problem}"


async def test_a_choice_run_resumes_and_refuses_to_mix_constrained_samples(tmp_path):
    engine = ScriptedEngine(_script)
    grid = _grid("self_consistency")
    problems = [TWO_PLUS_TWO, SEVEN_TIMES_SIX]
    await _runner(engine, NoMathGrader(), tmp_path).run(problems, grid)
    again = await _runner(engine, NoMathGrader(), tmp_path).run(problems, grid)
    assert (again.done, again.skipped) == (0, 4)
    with pytest.raises(BenchError, match="recorded here with other parameters"):
        await _runner(engine, NoMathGrader(), tmp_path, constrain=True).run(problems, grid)


def test_the_report_says_choice_answers_are_graded_by_exact_letter(tmp_path):
    config = RunConfig(
        model="m", backend="in-process", sampling=SamplingConfig(constrain_choices=True),
        prompt_template={"gsm8k": DEFAULT_PROMPT, CHOICE: CHOICE_PROMPT},
    )  # fmt: skip
    open_run(tmp_path, config)
    write_grid(tmp_path, _grid("self_consistency", budgets=(2,)))
    right = [trace("B", 0, True)] * 2
    mixed = [trace("C", 0, False), trace("B", 1, True)]
    writer = RecordWriter(tmp_path)
    for item in [
        record("q1", "self_consistency", 2, True, right, dataset=CHOICE),
        record("q2", "self_consistency", 2, False, mixed, dataset=CHOICE),
        record("p1", "self_consistency", 2, True),
    ]:
        writer.write(item)
    writer.close()
    files = build_report(tmp_path, with_plots=False)
    text = files.report.read_text()
    assert "samples constrained to the options" in text
    assert "mathematically equivalent to the reference (math-verify), or, for structured" in text
    assert f"equals the reference exactly (`{CHOICE}`)" in text
    assert f"`{CHOICE}`:\n\n```\n{CHOICE_PROMPT}\n```" in text
    assert f"## {CHOICE} (2 problems)" in text
    summary = files.summary.read_text()
    assert f"{CHOICE},self_consistency@2,self_consistency,2,2,0.5000" in summary


def test_cli_plans_a_choice_run_and_refuses_options_that_cannot_apply(capsys):
    assert bench_main(["run", "--dataset", CHOICE, "--limit", "2", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"{CHOICE}/{CHOICE}-0", f"{CHOICE}/{CHOICE}-1"]
    assert bench_main(["run", "--dataset", "gsm8k", "--constrain", "--dry-run"]) == 2
    assert "--constrain applies to multiple-choice datasets only" in capsys.readouterr().err
    thinking = "self_consistency?answer_from_thinking=true"
    assert bench_main(["run", "--dataset", CHOICE, "--strategy", thinking, "--dry-run"]) == 2
    assert "applies to boxed answers only" in capsys.readouterr().err
    both = load_problems(["gsm8k", CHOICE], Selection(limit=1))
    assert [p.answer_format for p in both] == [None, LETTERS]


async def test_a_constrained_choice_run_through_the_real_engine(engine, grader, tmp_path):
    """The tiny model's weights are random, so which letter it picks is arbitrary; that
    every sample is a letter, and that each is graded against the gold one, is not."""
    problems = load_problems([CHOICE], Selection(limit=2))
    sampling = SamplingConfig(max_tokens=16, constrain_choices=True)
    grid = build_grid(["self_consistency"], [1, 3], sampling, discover())
    backend = InProcessBackend(Service(BorrowedEngine(engine), Verifiers(grader), discover()))
    open_run(tmp_path, RunConfig(model=backend.model_name, backend=backend.kind,
                                 dtype=backend.dtype, sampling=sampling,
                                 prompt_template=run_prompt_template(problems, None)))  # fmt: skip
    runner = Runner(backend, grader, tmp_path, constrain=True, progress_stream=io.StringIO())
    outcome = await runner.run(problems, grid)
    assert (outcome.done, outcome.failures) == (4, [])
    gold = {p.id: p.answer for p in problems}
    for r in read_records(tmp_path):
        assert len(r.samples) == r.n
        assert all(s.answer in {"A", "B", "C", "D"} for s in r.samples)
        assert all(s.correct == (s.answer == gold[r.problem_id]) for s in r.samples)
        assert r.answer in {"A", "B", "C", "D"}
        assert r.correct == (r.answer == gold[r.problem_id])
    text = build_report(tmp_path, with_plots=False, draws=20).report.read_text()
    assert f"## {CHOICE} (2 problems)" in text
    assert f"equals the reference exactly (`{CHOICE}`)" in text
