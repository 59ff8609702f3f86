"""What a response shows of a run besides its text, as the client asked (thinking,
log-probabilities, the prompt echoed or scored, token ids)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from ttscale.engine.types import Position, ToolCall
from ttscale.strategies.service import Choice

from .logprobs import floored


@dataclass(frozen=True)
class Thinking:
    """How a response shows a reasoning model's thinking."""

    counted: bool = False
    """The usage counts thinking tokens (`completion_tokens_details.reasoning_tokens`)."""
    shown: bool = False
    """The thinking goes into the message (`reasoning`, `reasoning_content`)."""


NO_THINKING = Thinking()
"""A response that shows no thinking (a model without a reasoning parser)."""


@dataclass(frozen=True)
class Shown:
    """What a response shows of a run besides its text, as the client asked."""

    thinking: Thinking = NO_THINKING
    logprobs: int | None = None
    """Alternatives per position of each choice's log-probabilities (None: none)."""
    prompt_logprobs: bool = False
    echo: str | None = None
    """The prompt's text, which a text completion's choices start with (`echo`)."""
    echo_only: bool = False
    """`echo` with `max_tokens` 0: each choice is the prompt alone (it is scored)."""
    prompt_token_ids: list[int] | None = None
    """With `return_token_ids`: the prompt's token ids (and each choice shows its own)."""
    request_id: str | None = None
    """The client's `request_id`: the response's id is built on it, as in vLLM."""
    rendered_prompt: str | None = None
    """With `return_prompt_text`: the prompt as the chat template wrote it."""
    tool_choice: Literal["none", "auto", "required", "function"] = "none"
    """How the request let the model call its tools (`none`: no calls are read)."""

    @property
    def forced_call(self) -> bool:
        """Whether the model had to call a tool (`required`, or a named function)."""
        return self.tool_choice in ("required", "function")

    def finish_reason_of(self, choice: Choice) -> str:
        """As vLLM's server: "tool_calls" when the model chose to call (`auto`) or had to
        and finished (`required`); a named function's call finishes as "stop"."""
        if self.tool_choice == "auto" and choice.tool_calls:
            return "tool_calls"
        if self.tool_choice == "required" and choice.finish_reason == "stop":
            return "tool_calls"
        return choice.finish_reason

    def tool_calls_of(self, choice: Choice) -> list[ToolCall] | None:
        """The choice's calls where the request let the model call (None: no calls
        were read)."""
        if self.tool_choice == "none":
            return None
        return list(choice.tool_calls or [])

    def response_id(self, kind: str) -> str:
        """`chatcmpl-...` or `cmpl-...`: on the client's request id, else a new one."""
        return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{self.request_id or uuid.uuid4().hex}"

    def token_ids_of(self, choice: Choice) -> list[int] | None:
        return choice.token_ids if self.prompt_token_ids is not None else None

    def content_of(self, content: str | None) -> str | None:
        """A chat message's content: after the echoed last message, as in vLLM."""
        if not self.echo:
            return content
        return self.echo + (content or "")

    def text_of(self, choice: Choice) -> str:
        """A text completion's text: after the prompt with `echo`, as in vLLM (the prompt
        alone when it is only scored)."""
        if self.echo is None:
            return choice.text
        return self.echo if self.echo_only else self.echo + choice.text

    def scored_prompt(self, choice: Choice) -> PromptLogprobs | None:
        """The `prompt_logprobs` field, when the client asked for it."""
        return prompt_logprobs_of(choice.prompt_logprobs) if self.prompt_logprobs else None

    def positions_of(self, choice: Choice) -> list[Position] | None:
        """A text completion's log-probabilities: the prompt's first with `echo`."""
        if self.echo is None or choice.prompt_logprobs is None:
            return choice.logprobs
        if self.echo_only:
            return choice.prompt_logprobs
        return [*choice.prompt_logprobs, *(choice.logprobs or [])]


PLAIN = Shown()


class PromptTokenLogprob(BaseModel):
    """One token at a prompt position, as vLLM's server writes its `Logprob`."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


PromptLogprobs = list[dict[str, PromptTokenLogprob] | None]
"""Per prompt position (the first: None), token id -> its log-probability."""


def prompt_logprobs_of(positions: list[Position] | None) -> PromptLogprobs | None:
    """vLLM's `prompt_logprobs` field (minus infinity reads -9999.0, as there)."""
    if positions is None:
        return None
    return [
        None
        if not position or position[0].logprob is None
        else {
            str(t.token_id): PromptTokenLogprob(
                logprob=floored(t.logprob),
                rank=t.rank,
                decoded_token=t.token,
            )
            for t in position
        }
        for position in positions
    ]
