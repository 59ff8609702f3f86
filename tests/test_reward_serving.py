"""Reward models served to strategies by `ttscale serve --prm DIR --orm DIR`: in the
server's process, on vLLM's pooling runner beside the generator.

Tiny random reward models (built by `tests.support.tiny_models`; no weights of a real
PRM can be downloaded here). The remote form is in test_reward_remote.py: a module of its
own, so that this module's three engines have stopped before its server starts.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .support.servers import free_port, wait_for_http
from .support.tiny_models import TINY_MODEL_NAME, tiny_reward_model_dir

QUESTION = [{"role": "user", "content": "What is 2 + 3? Think step by step."}]


def _chat(model: str, strategy: str, **params) -> dict:
    return {
        "model": model,
        "messages": QUESTION,
        "max_tokens": 12,
        "seed": 3,
        "ttscale": {"strategy": strategy, "params": params},
    }


@pytest.fixture(scope="module")
def served_with_rewards(
    tiny_model_path: Path, starts_vllm, subprocess_env, tmp_path_factory
) -> Iterator[str]:
    """`ttscale serve` with an in-process PRM and ORM beside the generator."""
    log_path = tmp_path_factory.mktemp("serve-rewards") / "serve.log"
    port = free_port()
    orm = f"judge-orm={tiny_reward_model_dir('orm')}"
    command = [
        sys.executable, "-m", "ttscale.cli", "serve", "--model", str(tiny_model_path),
        "--port", str(port), "--max-model-len", "1024", "--served-model-name", TINY_MODEL_NAME,
        "--prm", str(tiny_reward_model_dir("prm")), "--orm", orm,
    ]  # fmt: skip
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=subprocess_env
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", process, 400, log_path)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert "verifier prm: prm" in log_path.read_text()


def test_the_verifiers_are_listed_with_kind_model_and_backend(served_with_rewards):
    listing = httpx.get(f"{served_with_rewards}/v1/verifiers", timeout=30).json()["data"]
    by_name = {entry["name"]: entry for entry in listing}
    assert set(by_name) == {"judge", "prm", "judge-orm"}
    assert by_name["judge"]["kinds"] == ["outcome", "process"]
    assert by_name["prm"]["kinds"] == ["process"]
    assert by_name["prm"]["backend"] == "vllm-pooling-local"
    assert by_name["prm"]["model"].endswith("tiny-prm-v1")
    assert by_name["judge-orm"]["kinds"] == ["outcome"]


def test_best_of_n_ranks_by_the_in_process_prm_and_bills_it(served_with_rewards):
    body = _chat(TINY_MODEL_NAME, "best_of_n", n=3, verifier="prm", aggregation="min")
    reply = httpx.post(f"{served_with_rewards}/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    evidence = reply.json()["ttscale"]
    assert evidence["explanation"].startswith("highest prm score (min over steps)")
    for candidate in evidence["candidates"]:
        steps = candidate["scores"]["prm_steps"]
        assert steps and all(0.0 < s < 1.0 for s in steps)
        assert candidate["scores"]["prm"] == min(steps)
    chosen = max(evidence["candidates"], key=lambda c: c["scores"]["prm"])
    assert evidence["chosen"] == chosen["index"]
    spent = evidence["budget"]["spent"]
    assert spent["verifier_tokens"] > 0 and spent["verifier_flops"] > 0


def test_step_search_is_guided_by_the_prm(served_with_rewards):
    body = _chat(
        TINY_MODEL_NAME, "step_search", verifier="prm", beam_width=2, expansions=2, max_steps=2,
        refine=False, step_max_tokens=8,
    )  # fmt: skip
    reply = httpx.post(f"{served_with_rewards}/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    evidence = reply.json()["ttscale"]
    assert "scored by prm" in evidence["explanation"]
    for candidate in evidence["candidates"]:
        assert candidate["scores"]["steps"] and candidate["scores"]["min_step"] == min(
            candidate["scores"]["steps"]
        )
    assert evidence["budget"]["spent"]["verifier_tokens"] > 0


def test_self_consistency_weighted_by_the_orm(served_with_rewards):
    body = _chat(
        TINY_MODEL_NAME, "self_consistency", n=3, weighting="verifier", verifier="judge-orm"
    )
    reply = httpx.post(f"{served_with_rewards}/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    evidence = reply.json()["ttscale"]
    assert all(0.0 < c["scores"]["judge-orm"] < 1.0 for c in evidence["candidates"])
    assert evidence["budget"]["spent"]["verifier_tokens"] > 0


@pytest.mark.parametrize(
    ("strategy", "params", "message"),
    [
        ("best_of_n", {"verifier": "nope"},
         "no verifier named 'nope'; valid: judge, judge-orm, prm"),
        ("step_search", {"verifier": "judge-orm"},
         "no process verifier named 'judge-orm'; valid: judge, prm"),
        ("best_of_n", {"verifier": "prm", "verifier_kind": "outcome"},
         "no outcome verifier named 'prm'; valid: judge, judge-orm"),
        ("self_consistency", {"weighting": "verifier", "verifier": "prm"},
         "no outcome verifier named 'prm'"),
    ],
)  # fmt: skip
def test_an_unknown_or_wrong_kind_verifier_is_a_400(served_with_rewards, strategy, params, message):
    body = _chat(TINY_MODEL_NAME, strategy, **params)
    reply = httpx.post(f"{served_with_rewards}/v1/chat/completions", json=body, timeout=60)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == "ttscale.params.verifier" and error["code"] == "unknown_verifier"
    assert message in error["message"]
