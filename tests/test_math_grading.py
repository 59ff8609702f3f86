"""Answer extraction and math equivalence.

Gold answers in the table are MATH-500 answers (see benchmarks' dataset provenance); the
predictions are the spellings models actually produce for them.
"""

from __future__ import annotations

import time

import pytest

from ttscale.verifiers.extraction import extract_answer, extract_boxed
from ttscale.verifiers.math_grader import MathGrader
from ttscale.verifiers.normalize import normalize_answer

from .support import grading_tasks

COLUMN = "\\begin{pmatrix} -2 \\\\ -14 \\\\ -7 \\end{pmatrix}"

EQUIVALENT = [
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\frac{\\pi}{2})"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\pi/2)"),
    ("\\frac{14}{3}", "14/3"),
    ("\\frac{14}{3}", "\\dfrac{14}{3}"),
    ("\\text{Evelyn}", "Evelyn"),
    ("90^\\circ", "90"),
    ("90^\\circ", "90^{\\circ}"),
    ("3\\sqrt{13}", "\\sqrt{117}"),
    ("\\frac{3}{56}", "\\frac{6}{112}"),
    ("6 - 5i", "6-5i"),
    ("x=5", "5"),
    ("1.25", "\\frac{5}{4}"),
    ("1.25", "1.250"),
    ("\\frac{3}{2}", "1.5"),
    ("-\\frac{\\pi}{6}", "-\\pi/6"),
    ("0.15", "\\frac{3}{20}"),
    ("(6,31,-1)", "(6, 31, -1)"),
    ("\\frac{3\\sqrt{3}}{4}", "\\frac{3}{4}\\sqrt{3}"),
    ("(-2,1)", "\\left(-2, 1\\right)"),
    ("11\\sqrt2", "11\\sqrt{2}"),
    ("\\frac43", "\\frac{4}{3}"),
    ("\\frac65", "1.2"),
    ("\\dfrac{17}{50}", "0.34"),
    ("-\\sqrt{3}", "-1\\cdot\\sqrt{3}"),
    ("10,\\!080", "10080"),
    ("11,\\! 111,\\! 111,\\! 100", "11111111100"),
    ("\\text{(C)}", "C"),
    ("288 \\pi", "288\\pi"),
    ("\\frac 59", "\\frac{5}{9}"),
    ("(2,\\infty)", "(2, \\infty)"),
    ("(3,4]", "(3, 4]"),
    ("120^\\circ", "120^{\\circ}"),
    ("\\frac9{19}", "9/19"),
    ("x^3+3x-6", "x^3 + 3x - 6"),
    ("2k+2", "2(k+1)"),
    ("1 \\pm \\sqrt{19}", "1 \\pm \\sqrt{19}"),
    (COLUMN, "\\begin{pmatrix}-2\\\\-14\\\\-7\\end{pmatrix}"),
    ("18+2\\pi", "2\\pi + 18"),
    ("46", "046"),
    ("720", "720.0"),
    ("0", "-0"),
]

NOT_EQUIVALENT = [
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi)"),
    ("\\frac{14}{3}", "4.66"),
    ("\\text{Evelyn}", "Bob"),
    ("90^\\circ", "45^\\circ"),
    ("3\\sqrt{13}", "3\\sqrt{12}"),
    ("\\frac{3}{56}", "\\frac{56}{3}"),
    ("6 - 5i", "6+5i"),
    ("x=5", "x=-5"),
    ("1.25", "1.35"),
    ("\\frac{3}{2}", "\\frac{2}{3}"),
    ("-\\frac{\\pi}{6}", "\\frac{\\pi}{6}"),
    ("(6,31,-1)", "(6,-31,1)"),
    ("(-2,1)", "(1,-2)"),
    ("(3,4]", "[3,4]"),
    ("(2,\\infty)", "[2,\\infty)"),
    ("\\text{(C)}", "\\text{(B)}"),
    ("288 \\pi", "288"),
    ("46", "64"),
    ("720", "72"),
    ("\\dfrac{17}{50}", "0.35"),
    ("2k+2", "2k+1"),
    ("x^3+3x-6", "x^3+3x+6"),
    ("\\sqrt{51}", "51"),
    ("\\pi", "3.14"),
    ("1,-2", "1,2"),
    (COLUMN, "\\begin{pmatrix} 2 \\\\ 14 \\\\ 7 \\end{pmatrix}"),
    ("10,\\!080", "10,800"),
    ("18+2\\pi", "18+\\pi"),
]


def test_table_is_large_enough():
    assert len(EQUIVALENT) + len(NOT_EQUIVALENT) >= 60


@pytest.mark.parametrize(("gold", "prediction"), EQUIVALENT)
async def test_equivalent_pairs(grader, gold, prediction):
    assert await grader.is_equivalent(gold, prediction)


@pytest.mark.parametrize(("gold", "prediction"), NOT_EQUIVALENT)
async def test_non_equivalent_pairs(grader, gold, prediction):
    assert not await grader.is_equivalent(gold, prediction)


@pytest.mark.parametrize(
    "prediction",
    [
        "",
        "   ",
        None,
        "\\frac{1}{",
        "}{}{",
        "\\sqrt{",
        "x" * 20000,
        "10^{10^{10}}",
        "2^{2^{2^{2^{2^{2}}}}}",
        "9^{9^{9^{9}}}!",
        "\\int_0^\\infty e^{-x^{x^{x}}}dx",
        "((((((((((((((((((((1))))))))))))))))))))",
    ],
)
async def test_adversarial_answers_are_rejected_within_the_timeout(grader, prediction):
    await grader.warm_up()  # the previous case's kill: its replacement starts off the clock
    started = time.perf_counter()
    assert not await grader.is_equivalent("5", prediction)
    assert time.perf_counter() - started < grader.timeout_s + 2.0


async def test_a_stuck_worker_is_replaced(grader):
    """After a timeout the pool still answers (pebble killed and replaced the worker)."""
    with pytest.raises(TimeoutError):
        await grader._run(grading_tasks.sleep_for_test, 10.0, limit_s=0.5)
    assert await grader.is_equivalent("\\frac{2}{4}", "0.5")


async def test_a_worker_imports_sympy_before_its_first_task_starts_its_clock():
    """A worker started late or replaced after a kill would otherwise spend its first
    check's time limit importing sympy, and on a busy machine answer by timeout."""
    grader = MathGrader(workers=1, timeout_s=3.0)  # not warmed up: the pool must do it
    try:
        assert await grader._run(grading_tasks.sympy_loaded)
        with pytest.raises(TimeoutError):
            await grader._run(grading_tasks.sleep_for_test, 10.0, limit_s=0.5)
        assert await grader._run(grading_tasks.sympy_loaded)  # the replacement worker
    finally:
        grader.close()


async def test_grouping_merges_equivalent_spellings(grader):
    answers = ["5", "5.0", "\\frac{10}{2}", "6", "x=5", None, "(1,2)", "\\text{5}", "", "6.0"]
    labels = await grader.group(answers)
    assert labels[0] == labels[1] == labels[2] == labels[4] == labels[7] == 0
    assert labels[3] == labels[9] == 1
    assert labels[5] is None and labels[8] is None
    assert labels[6] == 2


async def test_grouping_sixty_four_answers_is_fast(grader):
    spellings = ["\\frac{1}{2}", "0.5", "1/2", "\\dfrac{1}{2}", "2", "3", "(1,2)", "x=2"]
    answers = [spellings[i % len(spellings)] + ("" if i < 8 else " ") for i in range(64)]
    started = time.perf_counter()
    labels = await grader.group(answers)
    elapsed = time.perf_counter() - started
    assert len(set(labels)) == 4  # 1/2, 2 (with x=2), 3, (1,2)
    assert labels[0] == labels[1] == labels[2] == labels[3]
    assert labels[4] == labels[7]
    assert elapsed < 10  # generous: the figure itself is measured in the benchmark


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the answer is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("first \\boxed{1} then \\boxed{2}", "2"),
        ("nested \\boxed{\\frac{\\sqrt{3}}{2}} done", "\\frac{\\sqrt{3}}{2}"),
        ("\\fbox{7}", "7"),
        ("The answer is 42.", "42"),
        ("Final answer: $x = 3$\n", "x = 3"),
        ("Natalia sold 48/2 = 24 clips in May, 48+24 = 72 in total.", "72"),
        ("Total is 1,234 dollars", "1234"),
        ("#### 18", "18"),
        ("no digits here", None),
        ("unbalanced \\boxed{\\frac{1}{2}", None),
        ("", None),
        ("\\boxed{" + "9" * 600 + "}", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_boxed_without_fallbacks():
    assert extract_boxed("The answer is 5") is None
    assert extract_boxed("$\\boxed 5$") == "5"
    assert extract_answer("The answer is 5", numeric_fallback=False) == "5"
    assert extract_answer("it is 5", numeric_fallback=False) is None


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("\\left( 1, 2 \\right)", "(1,2)"),
        ("\\dfrac{1}{2}", "\\frac{1}{2}"),
        ("10,\\!080", "10080"),
        ("1,234", "1234"),
        ("90^\\circ", "90"),
        ("\\text{east}", "east"),
        ("5.50", "5.5"),
        ("007", "7"),
        ("3.", "3"),
    ],
)
def test_normalize_answer(raw, normal):
    assert normalize_answer(raw) == normal
