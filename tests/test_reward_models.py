"""PRM and ORM scoring through vLLM's pooling runner, on tiny random reward models.

The scores are checked against the same weights run with plain torch, so these tests
pin the real loading, prompt format and step-token handling, not just the shapes.
"""

from __future__ import annotations

import asyncio
import math

import pytest

from ttscale.verifiers.protocol import OutcomeVerifier, ProcessVerifier
from ttscale.verifiers.reward_model import RewardModel

from .support.servers import tiny_prm_server_args, vllm_api_server
from .support.tiny_models import reference_reward_logits, tiny_reward_model_dir

QUESTION = "What is 2 + 3 * 4?"
SOLUTIONS = [
    ["First compute 3 * 4 = 12.", "Then 2 + 12 = 14.", "The answer is \\boxed{14}."],
    ["2 + 3 = 5, times 4 is 20.", "The answer is \\boxed{20}."],
    ["\\boxed{14}"],
]


@pytest.fixture(scope="module")
async def prm(default_model_path, starts_vllm):
    path = tiny_reward_model_dir("prm")
    model = await asyncio.to_thread(RewardModel.load, path, "prm", dtype="float32")
    yield model
    await model.close()


@pytest.fixture(scope="module")
async def orm(default_model_path, starts_vllm):
    path = tiny_reward_model_dir("orm")
    model = await asyncio.to_thread(RewardModel.load, path, "orm", dtype="float32")
    yield model
    await model.close()


async def test_prm_gives_one_score_per_step_matching_torch(prm):
    assert isinstance(prm, ProcessVerifier)
    result = await prm.score_steps(QUESTION, SOLUTIONS)
    assert [len(s) for s in result.scores] == [3, 2, 1]
    path = tiny_reward_model_dir("prm")
    step_id = prm.step_token_id
    for steps, scores in zip(SOLUTIONS, result.scores, strict=True):
        ids = await prm.prm_prompt(QUESTION, steps)
        logits = reference_reward_logits(path, ids)
        positions = [i for i, t in enumerate(ids) if t == step_id]
        expected = logits.softmax(-1)[positions, 1].tolist()
        assert len(positions) == len(steps)
        assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(scores, expected, strict=True))
        assert all(0.0 <= s <= 1.0 for s in scores)


async def test_prm_usage_counts_the_prompts_it_read(prm):
    result = await prm.score_steps(QUESTION, SOLUTIONS)
    read = sum([len(await prm.prm_prompt(QUESTION, s)) for s in SOLUTIONS])
    assert result.usage.prompt_tokens == read == result.usage.total_tokens
    assert await prm.estimate_step_tokens(QUESTION, SOLUTIONS) >= read


async def test_prm_describes_its_format(prm, orm):
    assert prm.prm_format == "qwen" and prm.describe()["format"] == "qwen"
    assert "format" not in orm.describe()


async def test_prm_handles_empty_and_overlong_solutions(prm):
    result = await prm.score_steps(QUESTION, [[], ["word " * 5000]])
    assert result.scores == [[], [0.0]]


async def test_orm_gives_one_score_per_solution_matching_torch(orm):
    assert isinstance(orm, OutcomeVerifier)
    texts = ["\n\n".join(s) for s in SOLUTIONS]
    result = await orm.score_outcomes(QUESTION, texts)
    assert len(result.scores) == 3
    path = tiny_reward_model_dir("orm")
    for text, score in zip(texts, result.scores, strict=True):
        ids = await orm._conversation(QUESTION, text)
        last = reference_reward_logits(path, ids)[-1, 0].item()
        assert math.isclose(score, 1 / (1 + math.exp(-last)), abs_tol=1e-4)
    assert len(set(result.scores)) == 3


async def test_the_wrong_kind_of_question_is_refused(prm, orm):
    with pytest.raises(TypeError):
        await prm.score_outcomes(QUESTION, ["x"])
    with pytest.raises(TypeError):
        await orm.score_steps(QUESTION, [["x"]])


@pytest.fixture(scope="module")
def prm_server(default_model_path, starts_vllm, subprocess_env, tmp_path_factory):
    """A separate vLLM server running the tiny PRM with the pooling runner."""
    args = tiny_prm_server_args()
    with vllm_api_server(args, subprocess_env, tmp_path_factory.mktemp("prm")) as url:
        yield url


async def test_remote_prm_matches_the_in_process_prm(prm, prm_server):
    remote = await RewardModel.connect(prm_server, "prm")
    try:
        assert isinstance(remote, ProcessVerifier)
        local = await prm.score_steps(QUESTION, SOLUTIONS)
        over_http = await remote.score_steps(QUESTION, SOLUTIONS)
        for a, b in zip(local.scores, over_http.scores, strict=True):
            assert len(a) == len(b)
            assert all(math.isclose(x, y, abs_tol=1e-4) for x, y in zip(a, b, strict=True))
        assert over_http.usage.prompt_tokens == local.usage.prompt_tokens
    finally:
        await remote.close()
