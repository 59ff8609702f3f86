"""The labelled grading pairs and extraction cases in tests/data.

Each pair names its class (dollars, repeating decimals, bases, ...) and the source of
its gold answer (a MATH-500 or GSM8K id from benchmarks/data, or hand-written). Every
pair must be graded as labelled in both orders, and grouping the two answers must put
them in one vote class exactly when they are equivalent.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from ttscale.verifiers.extraction import extract_answer

DATA = Path(__file__).parent / "data"
DATASETS = Path(__file__).parent.parent / "benchmarks" / "data"
PAIRS = [json.loads(line) for line in (DATA / "grader_pairs.jsonl").open()]
EXTRACTION = [json.loads(line) for line in (DATA / "grader_extraction.jsonl").open()]


def _pair_id(row: dict) -> str:
    return f"{row['class']}:{row['gold']!a}~{row['prediction']!a}"


def test_the_table_covers_every_class_in_both_directions():
    assert len(PAIRS) >= 150
    equivalent = sum(row["equivalent"] for row in PAIRS)
    assert 0.4 <= equivalent / len(PAIRS) <= 0.6
    per_class = Counter(row["class"] for row in PAIRS)
    assert set(per_class) >= {
        "dollars", "repeating", "bases", "tolerance", "units", "percent",
        "intervals", "complex", "tuples-sets", "numbers",
    }  # fmt: skip
    assert min(per_class.values()) >= 6, per_class
    for row in PAIRS:
        assert row["source"] == "hand-written" or row["source"].startswith(("MATH-500", "GSM8K"))


def test_dataset_sources_name_real_gold_answers():
    """A pair that cites a dataset id uses that problem's gold answer."""
    golds = {}
    for name in ("math500", "gsm8k"):
        for line in (DATASETS / f"{name}.jsonl").open():
            row = json.loads(line)
            golds[row["id"]] = row["answer"]
    for row in PAIRS:
        if row["source"] != "hand-written":
            ident = row["source"].split()[1]
            assert golds[ident] == row["gold"], row


@pytest.mark.parametrize("row", PAIRS, ids=_pair_id)
async def test_pair_is_graded_as_labelled_in_both_orders(grader, row):
    gold, prediction = row["gold"], row["prediction"]
    assert await grader.is_equivalent(gold, prediction) is row["equivalent"]
    assert await grader.is_equivalent(prediction, gold) is row["equivalent"]


@pytest.mark.parametrize("row", PAIRS, ids=_pair_id)
async def test_pair_shares_a_vote_class_iff_equivalent(grader, row):
    labels = await grader.group([row["gold"], row["prediction"]])
    assert (labels[0] == labels[1]) is row["equivalent"]


def _solution(row: dict) -> str:
    if row["text"] is not None:
        return row["text"]
    ident = row["source"].split()[1]
    for line in (DATASETS / "math500.jsonl").open():
        problem = json.loads(line)
        if problem["id"] == ident:
            return problem["solution"]
    raise KeyError(ident)


def test_extraction_table_covers_boxes_and_corrections():
    per_class = Counter(row["class"] for row in EXTRACTION)
    assert per_class["multiple-boxes"] >= 6 and per_class["correction"] >= 6, per_class


@pytest.mark.parametrize("row", EXTRACTION, ids=lambda row: f"{row['class']}:{row['text']!a:.60}")
def test_extraction_reads_what_a_careful_grader_reads(row):
    assert extract_answer(_solution(row)) == row["expected"]
