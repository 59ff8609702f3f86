"""Math-Shepherd-style PRMs: a causal LM read at step tags, through vLLM's pooling runner.

The tiny model is a random `MistralForCausalLM` (the real math-shepherd-mistral-7b-prm's
architecture) with SmolLM2's tokenizer plus the real step tag " ки" as one added token;
its labels "+" and "-" are single tokens already. Scores are checked against the same
weights run with transformers, so the conversion vLLM does (LM head rows as a
classifier, STEP pooler at the tag) and the prompt format are pinned, not just shapes.
"""

from __future__ import annotations

import asyncio
import json
import math

import pytest
from transformers import AutoTokenizer

from ttscale.engine.protocol import EngineUnavailable
from ttscale.verifiers.protocol import ProcessVerifier
from ttscale.verifiers.reward_model import RewardModel, math_shepherd_server_args, shepherd_text

from .support.servers import vllm_api_server
from .support.tiny_models import reference_causal_lm_logits, tiny_shepherd_prm_dir
from .test_reward_models import QUESTION, SOLUTIONS


@pytest.fixture(scope="module")
def shepherd_path(default_model_path):
    return tiny_shepherd_prm_dir()


@pytest.fixture(scope="module")
async def shepherd(shepherd_path, starts_vllm):
    model = await asyncio.to_thread(
        RewardModel.load, shepherd_path, "prm", prm_format="math-shepherd", dtype="float32"
    )
    yield model
    await model.close()


def torch_step_scores(path, ids: list[int], tag_id: int, good_id: int, bad_id: int):
    """P(good) = softmax(logit good, logit bad)[0] at each tag, with transformers."""
    logits = reference_causal_lm_logits(path, ids)
    positions = [i for i, t in enumerate(ids) if t == tag_id]
    return positions, logits[positions][:, [good_id, bad_id]].softmax(-1)[:, 0].tolist()


def test_the_prompt_is_the_question_then_tagged_steps():
    assert shepherd_text(" Q? ", ["a = 1. ", "\nSo 2."]) == "Q? a = 1. ки\nSo 2. ки"
    assert shepherd_text("Q?", ["x"], step_tag=" <tag>") == "Q? x <tag>"


async def test_scores_match_transformers_at_the_step_tags(shepherd, shepherd_path):
    assert isinstance(shepherd, ProcessVerifier)
    tokenizer = AutoTokenizer.from_pretrained(shepherd_path)
    tokens = shepherd.shepherd
    assert tokens.step_tag_id == tokenizer.convert_tokens_to_ids(" ки")
    assert (tokens.good_id, tokens.bad_id) == tuple(tokenizer.convert_tokens_to_ids(["+", "-"]))
    result = await shepherd.score_steps(QUESTION, SOLUTIONS)
    assert [len(s) for s in result.scores] == [3, 2, 1]
    for steps, scores in zip(SOLUTIONS, result.scores, strict=True):
        ids = await shepherd.prm_prompt(QUESTION, steps)
        assert ids == tokenizer(shepherd_text(QUESTION, steps))["input_ids"]
        positions, expected = torch_step_scores(
            shepherd_path, ids, tokens.step_tag_id, tokens.good_id, tokens.bad_id
        )
        assert len(positions) == len(steps)
        assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(scores, expected, strict=True))
        assert all(0.0 < s < 1.0 for s in scores)
    flat = [s for scores in result.scores for s in scores]
    assert len({round(s, 3) for s in flat}) == len(flat)


async def test_usage_counts_the_prompts_it_read(shepherd):
    result = await shepherd.score_steps(QUESTION, SOLUTIONS)
    read = sum([len(await shepherd.prm_prompt(QUESTION, s)) for s in SOLUTIONS])
    assert result.usage.prompt_tokens == read == result.usage.total_tokens
    assert await shepherd.estimate_step_tokens(QUESTION, SOLUTIONS) >= read
    assert shepherd.describe()["format"] == "math-shepherd"


async def test_unreadable_solutions_score_zero_and_cost_nothing(shepherd):
    solutions = [[], ["word " * 5000], ["a ки b", "c"]]  # empty, overlong, a tag in a step
    result = await shepherd.score_steps(QUESTION, solutions)
    assert result.scores == [[], [0.0], [0.0, 0.0]]
    assert result.usage.prompt_tokens == 0


@pytest.mark.parametrize(
    "tokens",
    [
        {"step_tag": " step tag"},
        {"good_token": "good and"},
        {"bad_token": "+"},
        {"step_tag": "+"},
    ],
)
def test_tags_and_labels_must_be_single_distinct_tokens(shepherd_path, tokens):
    with pytest.raises(ValueError):  # raised from the tokenizer, before vLLM starts
        RewardModel.load(shepherd_path, "prm", prm_format="math-shepherd", **tokens)


def test_the_format_is_checked(shepherd_path):
    with pytest.raises(ValueError):
        RewardModel.load(shepherd_path, "prm", prm_format="llama")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RewardModel.load(shepherd_path, "orm", prm_format="math-shepherd")


def test_server_flags_convert_the_lm_to_a_step_tag_classifier(shepherd_path):
    args = math_shepherd_server_args(shepherd_path)
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert flags["--runner"] == "pooling" and flags["--convert"] == "classify"
    overrides = json.loads(flags["--hf-overrides"])
    assert overrides == {"classifier_from_token": ["+", "-"], "method": "no_post_processing"}
    pooler = json.loads(flags["--pooler-config"])
    tag_id = AutoTokenizer.from_pretrained(shepherd_path).convert_tokens_to_ids(" ки")
    assert pooler == {"task": "token_classify", "pooling_type": "STEP", "step_tag_id": tag_id}


@pytest.fixture(scope="module")
def shepherd_server(shepherd_path, starts_vllm, subprocess_env, tmp_path_factory):
    """A separate vLLM server running the tiny causal LM as a step-tag PRM."""
    args = ["--model", str(shepherd_path), "--dtype", "float32"]
    args += math_shepherd_server_args(shepherd_path)
    with vllm_api_server(args, subprocess_env, tmp_path_factory.mktemp("shepherd")) as url:
        yield url


async def test_remote_shepherd_prm_matches_the_in_process_one(shepherd, shepherd_server):
    remote = await RewardModel.connect(shepherd_server, "prm", prm_format="math-shepherd")
    try:
        assert isinstance(remote, ProcessVerifier)
        assert remote.describe()["format"] == "math-shepherd"
        assert remote.shepherd == shepherd.shepherd
        local = await shepherd.score_steps(QUESTION, SOLUTIONS)
        over_http = await remote.score_steps(QUESTION, SOLUTIONS)
        for a, b in zip(local.scores, over_http.scores, strict=True):
            assert len(a) == len(b)
            assert all(math.isclose(x, y, abs_tol=1e-4) for x, y in zip(a, b, strict=True))
        assert over_http.usage.prompt_tokens == local.usage.prompt_tokens
    finally:
        await remote.close()


async def test_a_server_set_up_for_another_tag_is_refused(shepherd_server):
    with pytest.raises(EngineUnavailable, match="step_tag_id"):
        await RewardModel.connect(
            shepherd_server, "prm", prm_format="math-shepherd", step_tag=" Step"
        )
