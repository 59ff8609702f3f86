import math
import random

import pytest

from ttscale.engine.confidence import topk_confidence
from ttscale.engine.entropy import topk_entropy
from ttscale.engine.position_stats import topk_stats


def _rows(seed: int, count: int, ragged: bool) -> list[list[float]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        width = rng.randint(0, 21) if ragged else 20
        row = [math.log(rng.random() + 1e-12) * rng.uniform(0.1, 5) for _ in range(width)]
        if ragged and row and rng.random() < 0.2:
            row[rng.randrange(len(row))] = rng.choice([-math.inf, math.nan])
        rows.append(row)
    return rows


@pytest.mark.parametrize("ragged", [False, True])
def test_each_row_as_the_scalar_functions_give_it(ragged):
    rows = _rows(7, 300, ragged)
    entropies, confidences = topk_stats(rows)
    assert entropies == pytest.approx([topk_entropy(r) for r in rows], rel=1e-9, abs=1e-12)
    assert confidences == pytest.approx([topk_confidence(r) for r in rows], rel=1e-9, abs=1e-12)


def test_edge_rows():
    rows = [[], [0.0], [-math.inf, math.nan], [math.log(0.3), math.log(0.1)]]
    entropies, confidences = topk_stats(rows)
    assert entropies[:3] == [0.0, 0.0, 0.0]
    assert math.isclose(entropies[3], topk_entropy(rows[3]))
    assert confidences == pytest.approx([0.0, 0.0, 0.0, topk_confidence(rows[3])])
    assert topk_stats([]) == ([], [])
    assert topk_stats([[], []]) == ([0.0, 0.0], [0.0, 0.0])


def test_entropy_can_be_left_out():
    entropies, confidences = topk_stats([[-1.0, -3.0]], entropy=False)
    assert entropies == [0.0]
    assert confidences == [2.0]
