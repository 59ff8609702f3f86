"""Top-k entropy and confidence of many positions at once.

`topk_entropy` and `topk_confidence` take one position's log-probabilities; with top-20
logprobs on every generated token, calling them position by position costs the adapter
several µs of Python per token, which a GPU's rate makes the front's largest cost
(lab/studies/front-ceiling.md). Here the positions of a sample (or of a streamed chunk)
are reduced together with numpy, to the same values (up to float rounding).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np


def topk_stats(
    rows: Sequence[Sequence[float]], *, entropy: bool = True
) -> tuple[list[float], list[float]]:
    """(entropies, confidences), one each per row of top-k log-probabilities, as
    `topk_entropy` and `topk_confidence` give them row by row: -inf and NaN entries are
    left out, an empty row gives 0 for both. `entropy=False` gives 0.0 entropies (top-0
    logprobs: the sampled token's alone)."""
    count = len(rows)
    if count == 0:
        return [], []
    lengths = np.fromiter(map(len, rows), dtype=np.intp, count=count)
    width = int(lengths.max()) if count else 0
    if width == 0:
        return [0.0] * count, [0.0] * count
    flat = np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=int(lengths.sum()))
    if int(lengths.min()) == width:
        values = flat.reshape(count, width)
    else:  # ragged rows: pad with -inf, which counts as absent
        values = np.full((count, width), -np.inf)
        starts = np.cumsum(lengths) - lengths
        row_of = np.repeat(np.arange(count), lengths)
        values[row_of, np.arange(flat.size) - np.repeat(starts, lengths)] = flat
    present = np.isfinite(values)
    kept = present.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidences = np.where(kept > 0, -np.where(present, values, 0.0).sum(axis=1) / kept, 0.0)
        if not entropy:
            return [0.0] * count, confidences.tolist()
        finite = np.where(present, values, -np.inf)
        top = finite.max(axis=1, keepdims=True)
        weights = np.exp(finite - np.where(kept[:, None] > 0, top, 0.0))
        shares = weights / weights.sum(axis=1, keepdims=True)
        terms = np.where(shares > 0.0, shares * np.log(shares), 0.0)
        entropies = np.where(kept > 0, -terms.sum(axis=1), 0.0) + 0.0  # no -0.0
    return entropies.tolist(), confidences.tolist()
