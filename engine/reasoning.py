"""Thinking apart from the answer: vLLM's own reasoning parsers, applied to each sample.

A reasoning model writes its thoughts, closes them (`</think>` for the DeepSeek-R1 and
Qwen3 families), then answers. The server is told which parser reads the model
(`--reasoning-parser NAME`, by the names vLLM's own server uses), and every sample the
engine returns carries its thinking, its answer part and how many thinking tokens it
spent, whichever adapter drew it. Strategies vote on the answer part.

Where the parser's thoughts open and close with one vocabulary token each (the strings
vLLM's reasoning configuration forces at a thinking budget), the split is made on token
ids, not on text: the markers may be special tokens that the sample's text leaves out,
and the thought may have been opened by the chat template rather than the model. Other
parsers read the text, decoded with its special tokens, as vLLM's server has them read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .local_tokenizer import off_the_loop_if_long
from .types import Sample


class UnknownReasoningParser(ValueError):
    """No vLLM reasoning parser has this name."""


def known_parsers() -> list[str]:
    """The reasoning parsers vLLM offers, by the names of its `--reasoning-parser`."""
    from vllm.reasoning import ReasoningParserManager

    return ReasoningParserManager.list_registered()


def check_parser_name(name: str) -> None:
    """Refuse a name vLLM has no reasoning parser for, listing the ones it has."""
    known = known_parsers()
    if name not in known:
        raise UnknownReasoningParser(
            f"unknown reasoning parser {name!r}; vLLM has: {', '.join(known)}"
        )


@dataclass(frozen=True, slots=True)
class ReasoningParts:
    reasoning: str | None
    """The thinking, None when the sample did not think."""
    content: str
    """The answer part: empty while the thought is still open (cut by a length limit)."""
    reasoning_tokens: int
    """Thinking tokens generated, the markers not counted (as vLLM counts them)."""
    thinking_span: int
    """Generated positions up to the thought's close: the thinking, with its markers."""


class ReasoningSplitter:
    """One model's reasoning parser over its tokenizer."""

    def __init__(self, name: str, tokenizer: Any) -> None:
        from vllm.reasoning import ReasoningParserManager

        check_parser_name(name)
        self.name = name
        self._tokenizer = tokenizer
        self._parser = ReasoningParserManager.get_reasoning_parser(name)(tokenizer)
        start, end = self._parser.reasoning_start_str, self._parser.reasoning_end_str
        self.takes_budgets = bool(start and end)
        """vLLM closes thoughts at a budget by writing these strings: a parser without
        them cannot take thinking budgets."""
        self._start_id = self._marker_id(start)
        self._end_id = self._marker_id(end)

    def _marker_id(self, marker: str | None) -> int | None:
        """The one vocabulary token that spells `marker`, if there is one."""
        return self._parser.vocab.get(marker) if marker else None

    @property
    def end_token_ids(self) -> tuple[int, ...]:
        """The token that closes a thought, where the parser marks thoughts by tokens."""
        return () if self._end_id is None or self._start_id is None else (self._end_id,)

    def thinks_after(self, prompt_ids: Sequence[int]) -> bool:
        """Whether a sample of this prompt starts in a thought or may open one (False
        when the prompt itself closed the thought: thinking switched off)."""
        return not self._parser.is_reasoning_end(list(prompt_ids))

    async def split(self, sample: Sample, prompt_ids: Sequence[int]) -> ReasoningParts:
        """The sample's thinking and answer part."""
        if not self.thinks_after(prompt_ids):
            return ReasoningParts(None, sample.text, 0, 0)
        if not self.end_token_ids:
            return await self._split_text(sample)
        ids = list(sample.token_ids)
        start = 1 if ids[:1] == [self._start_id] else 0
        closes = ids.index(self._end_id) if self._end_id in ids else len(ids)
        span = min(closes + 1, len(ids))
        reasoning = await self._decode(ids[start:closes])
        content = await self._answer_part(sample, ids[:span], ids[span:])
        return ReasoningParts(reasoning, content, closes - start, span)

    async def _answer_part(self, sample: Sample, head: list[int], tail: list[int]) -> str:
        """What follows the close in the sample's own text, which vLLM has cut at a stop
        string; the decoded answer tokens where the text does not begin as they do."""
        shown = await self._decode(head)
        if sample.text.startswith(shown):
            return sample.text[len(shown) :]
        return await self._decode(tail)

    async def _split_text(self, sample: Sample) -> ReasoningParts:
        ids = list(sample.token_ids)
        decode = self._tokenizer.decode
        marked = await off_the_loop_if_long(
            lambda: decode(ids, skip_special_tokens=False), len(ids)
        )
        reasoning, content = self._parser.extract_reasoning(marked, self._request)
        tokens = self._parser.count_reasoning_tokens(ids)
        return ReasoningParts(reasoning, content or "", tokens, tokens)

    async def _decode(self, ids: list[int]) -> str:
        decode = self._tokenizer.decode
        return await off_the_loop_if_long(lambda: decode(ids, skip_special_tokens=True), len(ids))

    @cached_property
    def _request(self) -> Any:
        """The chat request that text-splitting parsers take: one with no options."""
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        return ChatCompletionRequest(model="ttscale", messages=[])

    async def apply(self, sample: Sample, prompt_ids: Sequence[int]) -> Sample:
        """`sample` with its thinking, answer part and thinking tokens filled in."""
        parts = await self.split(sample, prompt_ids)
        sample.reasoning = parts.reasoning
        sample.content = parts.content
        sample.reasoning_tokens = parts.reasoning_tokens
        sample.thinking_span = parts.thinking_span
        return sample
