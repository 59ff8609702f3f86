"""Token and group confidence (Deep Think with Confidence, arXiv 2508.15260).

Token confidence C_i is minus the mean of the top-k log-probabilities at position i: high
when the model puts its mass on few tokens (the other k-1 log-probabilities are very
negative), low when the top k are close together. Group confidence is the mean of C over
a sliding window of the last W tokens; a trace's confidence is its lowest group
confidence. The adapters compute C where they compute the entropy (one float per token
travels up), and watch the window while a sample runs when `SamplingSpec.confidence_stop`
asks them to abort it once the window falls below a threshold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from .types import ConfidenceStop

LOW_CONFIDENCE = "low_confidence"
"""`Sample.stop_reason` of a sample the adapter aborted because its window confidence
fell below `ConfidenceStop.threshold` (its finish reason is "abort")."""


def topk_confidence(logprobs: Iterable[float]) -> float:
    """-mean of the top-k log-probabilities at one position (0 for an empty input).

    -inf (probability 0) and NaN entries are left out, as in `topk_entropy`: one
    impossible token would otherwise make any position infinitely confident.
    """
    values = list(logprobs)
    total = sum(values)
    if values and math.isfinite(total):  # the common case: nothing to leave out
        return -total / len(values)
    values = [lp for lp in values if lp != -math.inf and not math.isnan(lp)]
    if not values:
        return 0.0
    return -sum(values) / len(values)


def group_confidences(confidences: Sequence[float], window: int) -> list[float]:
    """Mean confidence of every full window of `window` tokens; a trace shorter than one
    window has one group, all of it (so every non-empty trace has a lowest group)."""
    if not confidences:
        return []
    if len(confidences) < window:
        return [sum(confidences) / len(confidences)]
    total = sum(confidences[:window])
    groups = [total / window]
    for end in range(window, len(confidences)):
        total += confidences[end] - confidences[end - window]
        groups.append(total / window)
    return groups


def lowest_group_confidence(confidences: Sequence[float], window: int) -> float | None:
    """A trace's confidence: its lowest group confidence (None for an empty trace)."""
    groups = group_confidences(confidences, window)
    return min(groups) if groups else None


def first_low_window(confidences: Sequence[float], since: int, stop: ConfidenceStop) -> int | None:
    """Token count at which a full window ending at position `since` or later first has a
    mean below `stop.threshold`; None if none does.

    The adapters call this with the confidences received so far and `since` = how many
    they had before the latest chunk, so each position is checked once. Only full windows
    are checked, as when the threshold was set: a few opening tokens alone never stop a
    sample.
    """
    window = stop.window
    end = max(since, window - 1)
    if end >= len(confidences):
        return None
    total = sum(confidences[end - window + 1 : end + 1])
    while True:
        if total / window < stop.threshold:
            return end + 1
        end += 1
        if end >= len(confidences):
            return None
        total += confidences[end] - confidences[end - window]


def confidence_drops(confidences: Sequence[float], window: int) -> list[tuple[int, float]]:
    """Where a trace's running lowest full-window confidence falls: (token count at the end
    of the window, new lowest) pairs, in order.

    Enough to replay an online stop offline for any threshold s: the watch would abort the
    trace at the first pair whose value is below s (`first_low_window` finds the same
    count), and a trace with no such pair runs to its end. Only full windows count, as for
    the watch; a trace shorter than one window has no pairs.
    """
    drops: list[tuple[int, float]] = []
    if len(confidences) < window:
        return drops
    for end, group in enumerate(group_confidences(confidences, window), start=window):
        if not drops or group < drops[-1][1]:
            drops.append((end, group))
    return drops
