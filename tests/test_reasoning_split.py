"""How a sample is split into thinking and answer (`engine/reasoning.py`), with vLLM's own
parsers over the tiny reasoning model's tokenizer: no engine is started."""

from __future__ import annotations

from dataclasses import replace

import pytest
import vllm.sampling_params  # noqa: F401  (at collection: importing vLLM runs `file` once)
from transformers import AutoTokenizer

from ttscale.engine.reasoning import ReasoningSplitter, UnknownReasoningParser
from ttscale.engine.remote import _apply_chunk, _Partial, _watch_confidence
from ttscale.engine.types import ConfidenceStop, Sample, SamplingSpec
from ttscale.strategies.errors import InvalidRequest

from .support.fakes import Scripted, ScriptedEngine
from .support.tiny_models import (
    REASONING_TEMPLATE,
    THINK_END,
    THINK_START,
    tiny_reasoning_model_dir,
)
from .test_service import request, service

CHAT = [{"role": "user", "content": "What is 7 + 5?"}]


@pytest.fixture(scope="module")
def tokenizer(default_model_path):
    return AutoTokenizer.from_pretrained(tiny_reasoning_model_dir())


def prompt(tokenizer, *, thinking: bool = True) -> list[int]:
    text = tokenizer.apply_chat_template(
        CHAT, add_generation_prompt=True, tokenize=False, enable_thinking=thinking
    )
    assert REASONING_TEMPLATE == tokenizer.chat_template
    return tokenizer.encode(text, add_special_tokens=False)


def sample_of(tokenizer, ids: list[int]) -> Sample:
    """A sample as vLLM returns it: special tokens left out of the text."""
    return Sample(0, tokenizer.decode(ids, skip_special_tokens=True), ids, "stop")


def words(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("parser", ["deepseek_r1", "qwen3"])
async def test_a_thought_opened_by_the_template_is_split_at_its_close(tokenizer, parser):
    splitter = ReasoningSplitter(parser, tokenizer)
    end = tokenizer.convert_tokens_to_ids(THINK_END)
    assert splitter.end_token_ids == (end,) and splitter.takes_budgets
    thought, answer = words(tokenizer, "Seven and five"), words(tokenizer, " is \\boxed{12}.")
    parts = await splitter.split(sample_of(tokenizer, [*thought, end, *answer]), prompt(tokenizer))
    assert parts.reasoning == "Seven and five" and parts.content == " is \\boxed{12}."
    assert parts.reasoning_tokens == len(thought) and parts.thinking_span == len(thought) + 1


async def test_a_thought_the_model_opens_itself_does_not_count_its_marker(tokenizer):
    splitter = ReasoningSplitter("deepseek_r1", tokenizer)
    start, end = tokenizer.convert_tokens_to_ids([THINK_START, THINK_END])
    thought = words(tokenizer, "Hmm")
    ids = [start, *thought, end, *words(tokenizer, "12")]
    parts = await splitter.split(sample_of(tokenizer, ids), words(tokenizer, "Q: 7 + 5?"))
    assert (parts.reasoning, parts.content) == ("Hmm", "12")
    assert parts.reasoning_tokens == len(thought) and parts.thinking_span == len(thought) + 2


async def test_a_thought_still_open_has_no_answer_part(tokenizer):
    splitter = ReasoningSplitter("deepseek_r1", tokenizer)
    thought = words(tokenizer, "Let me think, then think again")
    parts = await splitter.split(sample_of(tokenizer, thought), prompt(tokenizer))
    assert parts.content == "" and parts.reasoning_tokens == len(thought)


async def test_the_answer_part_is_cut_where_vllm_cut_the_text_at_a_stop_string(tokenizer):
    """vLLM keeps the tokens of a stop string but not its text: the answer part is the
    text's, not the tokens' decoding."""
    splitter = ReasoningSplitter("deepseek_r1", tokenizer)
    end = tokenizer.convert_tokens_to_ids(THINK_END)
    thought, answer = words(tokenizer, "Sum"), words(tokenizer, "12 STOP and more")
    ids = [*thought, end, *answer]
    cut = Sample(0, "Sum12 ", ids, "stop", stop_reason="STOP")
    parts = await splitter.split(cut, prompt(tokenizer))
    assert parts.content == "12 "


async def test_a_prompt_that_closed_the_thought_leaves_the_whole_sample_as_the_answer(tokenizer):
    splitter = ReasoningSplitter("deepseek_r1", tokenizer)
    ids = words(tokenizer, "It is \\boxed{12}.")
    parts = await splitter.split(sample_of(tokenizer, ids), prompt(tokenizer, thinking=False))
    assert parts.reasoning is None and parts.content == "It is \\boxed{12}."
    assert parts.reasoning_tokens == 0


async def test_a_parser_without_marker_tokens_splits_the_text_and_takes_no_budgets(tokenizer):
    splitter = ReasoningSplitter("granite", tokenizer)
    assert splitter.end_token_ids == () and not splitter.takes_budgets
    text = "Here's my thought process: 7 and 5. Here's my response: \\boxed{12}"
    ids = words(tokenizer, text)
    parts = await splitter.split(Sample(0, text, ids, "stop"), prompt(tokenizer))
    assert parts.reasoning.strip() == "7 and 5." and parts.content.strip() == "\\boxed{12}"


def test_an_unknown_parser_names_the_ones_vllm_has(tokenizer):
    with pytest.raises(UnknownReasoningParser, match="deepseek_r1"):
        ReasoningSplitter("no_such_parser", tokenizer)


async def test_a_thinking_budget_needs_a_parser_that_can_close_a_thought(grader):
    engine = ScriptedEngine(lambda p, spec, i: Scripted("1"), reasoning=True)
    engine.info = replace(engine.info, reasoning_parser="granite", thinking_budgets=False)
    svc, _ = service(engine, grader)
    budgeted = SamplingSpec(thinking_token_budget=8, max_tokens=64)
    with pytest.raises(InvalidRequest, match="cannot keep a thinking budget"):
        await svc.prepare(request(sampling=budgeted))


def test_the_remote_confidence_watch_ends_where_the_thought_closes():
    """Confident thinking, then an unsure answer: the watch reads the thinking only."""
    end = 99
    stop = ConfidenceStop(window=2, threshold=1.0)
    spec = SamplingSpec(logprobs=2, confidence_stop=stop)
    partial = _Partial()
    sure, unsure = {"a": -0.01, "b": -5.0}, {"a": -0.7, "b": -0.7}
    tops = [sure, sure, sure, unsure, unsure]
    logprobs = {"token_logprobs": [-0.01] * 5, "top_logprobs": tops}
    chunk = {"choices": [{"text": "", "token_ids": [1, 2, end, 3, 4], "logprobs": logprobs}]}
    _apply_chunk(chunk, partial, spec, (end,))
    assert partial.thought_closed_at == 2 and not partial.low_confidence
    unwatched = _Partial()
    _apply_chunk(chunk, unwatched, spec, ())
    assert unwatched.low_confidence  # without the close, the answer's doubt stops it
    _watch_confidence(partial, spec, 0)
    assert not partial.low_confidence
