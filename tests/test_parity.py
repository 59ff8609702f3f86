"""The numerics self-check (`ttscale doctor`): its verdict rule, and the command itself.

The check through the real engine on the embedded model runs in test_remote_engine.py,
where content assertions depend on it.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

from ttscale.engine.parity import ParityReport, PromptParity, agreement

TTSCALE = [sys.executable, "-m", "ttscale.cli"]


def _row(best: int, logprobs: dict[int, float], vocab: int = 4) -> list[float]:
    row = [-20.0] * vocab
    for token, value in logprobs.items():
        row[token] = value
    assert max(range(vocab), key=row.__getitem__) == best
    return row


def test_the_engines_token_must_be_the_references_first_choice():
    rows = [_row(1, {1: -0.1}), _row(2, {2: -0.2}), _row(0, {0: -0.3})]
    assert agreement([1, 2, 0], rows, tie_nats=0.02) == (3, None)


def test_a_near_tie_is_accepted_within_the_tolerance():
    row = _row(1, {1: math.log(0.5) + 0.01, 3: math.log(0.5) - 0.01})
    assert agreement([3], [row], tie_nats=0.05) == (1, None)
    agreed, gap = agreement([3], [row], tie_nats=0.01)
    assert agreed == 0 and gap is not None and abs(gap - 0.02) < 1e-9


def test_wrong_numerics_stop_the_count_at_the_first_miss():
    rows = [_row(1, {1: -0.1}), _row(2, {2: -0.1, 0: -5.0}), _row(0, {0: -0.1})]
    agreed, gap = agreement([1, 0, 0], rows, tie_nats=0.3)
    assert agreed == 1 and gap is not None and abs(gap - 4.9) < 1e-9


def test_the_report_says_wrong_numerics_when_any_prompt_misses():
    good = PromptParity("a", 16, 16, None, "x")
    bad = PromptParity("b", 16, 2, 3.5, "garbage")
    assert ParityReport("m", "float32", 0.02, [good]).ok
    report = ParityReport("m", "bfloat16", 0.3, [good, bad])
    assert not report.ok
    text = report.describe()
    assert "2/16 tokens agree; first disagreement 3.500 nats" in text
    assert "verdict: WRONG NUMERICS" in text


def test_doctor_checks_the_engine_and_says_ok(tiny_model_path: Path, subprocess_env):
    result = subprocess.run(
        [*TTSCALE, "doctor", "--model", str(tiny_model_path), "--max-model-len", "512"],
        capture_output=True, text=True, timeout=300, env=subprocess_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("cpu: ") and lines[1] == f"model: {tiny_model_path}"
    assert "engine dtype: float32; reference: transformers float32" in lines[2]
    assert sum("16/16 tokens agree" in line for line in lines) == 5
    assert lines[-2].startswith("verdict: ok")
    # reported, not judged: whether seeds repeat across batches is the machine's answer
    assert re.match(r"seeds: (ok: )?[0-4] of 4 seeded samples came out alike", lines[-1])
