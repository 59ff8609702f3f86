"""Per-token entropy of the renormalised top-k distribution (arXiv 2511.02309)."""

from __future__ import annotations

import math

from ttscale.engine.entropy import mean_entropy, topk_entropy


def test_uniform_over_k_has_entropy_log_k():
    for k in (1, 2, 5, 20):
        assert math.isclose(topk_entropy([math.log(1 / 50)] * k), math.log(k))


def test_renormalisation_ignores_the_missing_mass():
    # two tokens with p=0.3 and p=0.1 renormalise to 0.75 / 0.25
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert math.isclose(topk_entropy([math.log(0.3), math.log(0.1)]), expected)


def test_a_certain_token_has_zero_entropy():
    assert topk_entropy([0.0]) == 0.0
    assert topk_entropy([0.0, -math.inf, -math.inf]) == 0.0


def test_empty_and_nan_inputs_are_safe():
    assert topk_entropy([]) == 0.0
    assert topk_entropy([float("nan")]) == 0.0


def test_large_negative_logprobs_do_not_underflow():
    assert math.isclose(topk_entropy([-1000.0, -1000.0]), math.log(2))


def test_mean_entropy():
    assert mean_entropy([0.5, 1.5]) == 1.0
    assert mean_entropy([]) == 0.0
