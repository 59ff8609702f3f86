"""Per-token entropy from top-k log-probabilities.

Definition (The Sequential Edge, arXiv 2511.02309): the Shannon entropy of the top-k
next-token distribution renormalised over those k tokens. It is computed in the
engine adapter so that only one float per token travels up to the strategies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def topk_entropy(logprobs: Iterable[float]) -> float:
    """Entropy (nats) of the distribution obtained by renormalising `logprobs`.

    Log-probabilities of -inf (probability 0) contribute nothing. An empty input has
    entropy 0.
    """
    values = [lp for lp in logprobs if lp != -math.inf and not math.isnan(lp)]
    if not values:
        return 0.0
    top = max(values)
    weights = [math.exp(lp - top) for lp in values]
    total = sum(weights)
    entropy = 0.0
    for w in weights:
        p = w / total
        if p > 0.0:
            entropy -= p * math.log(p)
    return entropy


def mean_entropy(token_entropies: Iterable[float]) -> float:
    values = list(token_entropies)
    return sum(values) / len(values) if values else 0.0
