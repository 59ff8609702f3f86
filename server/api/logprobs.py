"""Log-probabilities in a response, in the shapes of vLLM's OpenAI server.

Each position of a sample comes from the engine in vLLM's order (`Position`: the sampled
token first, then the top-k by rank, the sampled one once), so what a client sees here
is what vLLM's server shows for the same sample: a chat position lists its first
`top_logprobs` entries, a text completion position its first `logprobs + 1`, and log
probabilities below -9999 (minus infinity included) read -9999.0, as OpenAI writes them.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from ttscale.engine.types import Position

_FLOOR = -9999.0


def floored(logprob: float | None) -> float:
    """A log-probability as OpenAI writes it: never below -9999.0 (None: -9999.0)."""
    return _FLOOR if logprob is None else max(logprob, _FLOOR)


def _bytes(token: str) -> list[int]:
    return list(token.encode("utf-8", errors="replace"))


class ChatTokenLogprob(BaseModel):
    token: str
    logprob: float = _FLOOR
    bytes: list[int] | None = None


class ChatPositionLogprobs(ChatTokenLogprob):
    top_logprobs: list[ChatTokenLogprob] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    content: list[ChatPositionLogprobs] | None = None

    @classmethod
    def of(cls, positions: Sequence[Position], top_logprobs: int) -> ChatLogprobs:
        return cls(content=[_chat_position(position, top_logprobs) for position in positions])


def _chat_position(position: Position, top_logprobs: int) -> ChatPositionLogprobs:
    if not position:  # vLLM reported nothing for this position
        return ChatPositionLogprobs(token="", bytes=[])
    sampled = position[0]
    shown = position if top_logprobs == -1 else position[:top_logprobs]
    return ChatPositionLogprobs(
        token=sampled.token,
        logprob=floored(sampled.logprob),
        bytes=_bytes(sampled.token),
        top_logprobs=[
            ChatTokenLogprob(token=t.token, logprob=floored(t.logprob), bytes=_bytes(t.token))
            for t in shown
        ],
    )


def logprobs_of(
    kind: str, positions: Sequence[Position] | None, shown: int | None
) -> ChatLogprobs | CompletionLogprobs | None:
    """A choice's `logprobs` field: None unless the client asked (`shown` alternatives)
    and the engine kept them."""
    if shown is None or positions is None:
        return None
    if kind == "chat":
        return ChatLogprobs.of(positions, shown)
    return CompletionLogprobs.of(positions, shown)


class CompletionLogprobs(BaseModel):
    text_offset: list[int] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)

    @classmethod
    def of(cls, positions: Sequence[Position], logprobs: int) -> CompletionLogprobs:
        """Offsets count the characters of the tokens before each one, from 0."""
        made = cls()
        offset = 0
        for position in positions:
            sampled = position[0] if position else None
            token = sampled.token if sampled is not None else ""
            made.text_offset.append(offset)
            made.tokens.append(token)
            offset += len(token)
            if sampled is None or sampled.logprob is None:  # a prompt's first token
                made.token_logprobs.append(None)
                made.top_logprobs.append(None)
                continue
            made.token_logprobs.append(floored(sampled.logprob))
            shown = position if logprobs == -1 else position[: logprobs + 1]
            made.top_logprobs.append({t.token: floored(t.logprob) for t in shown})
        return made
