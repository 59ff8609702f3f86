"""The model's tokenizer run in this process: chat rendering for every engine, and the
rule for keeping long (de)tokenisations off the event loop.

A remote engine otherwise asks the server (`/tokenize` with `messages`) for every chat
prompt: one more HTTP round trip before each request can start. With the model's
directory at hand (`ttscale serve --engine remote --model DIR`) the front renders the
template itself, but only after checking, at connect, that it renders a few probe
conversations to exactly the token ids the server does: a tokenizer or template that
differs in any way (another revision, another template) would otherwise change every
prompt silently.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

from .protocol import EngineRejected, EngineUnavailable
from .types import DEFAULT_RENDERING, PromptRendering

logger = logging.getLogger(__name__)
T = TypeVar("T")

Messages = Sequence[dict[str, Any]]

PROBES: tuple[list[dict[str, str]], ...] = (
    [{"role": "user", "content": "What is 7 + 5? Put the answer in \\boxed{}."}],
    [
        {"role": "system", "content": "You are a careful mathematician."},
        {"role": "user", "content": "Solve x^2 = 16 for x > 0."},
        {"role": "assistant", "content": "x = 4"},
        {"role": "user", "content": "And for x < 0? Ünïcödé, 数学, emoji 🙂."},
    ],
)

_INLINE_LIMIT = 4096
"""Texts (characters) or token lists shorter than this are (de)tokenised on the event
loop, where it takes microseconds; longer ones in a thread, so one huge prompt cannot
stall every other request (and /health)."""


async def off_the_loop_if_long(work: Callable[[], T], size: int) -> T:
    if size < _INLINE_LIMIT:
        return work()
    return await asyncio.to_thread(work)


class LocalChatTemplate:
    """A model's chat template and tokenizer, run in this process: the in-process
    engine's renderer, and a remote engine's once it matches the server."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._encode_wrapped = _wrapped_encoder(tokenizer)
        self._encode_short = _fast_encoder(tokenizer) or self._encode_wrapped

    @classmethod
    async def matching(
        cls, model_dir: str | Path, server_render: Callable[[Messages], Awaitable[list[int]]]
    ) -> LocalChatTemplate | None:
        """The template of `model_dir` if it renders every probe as the server does;
        None (and a warning saying why) otherwise."""
        try:
            template = cls(await asyncio.to_thread(load_tokenizer, Path(model_dir)))
            for messages in PROBES:
                ours, theirs = await template.render(messages), await server_render(messages)
                if ours != theirs:
                    logger.warning(
                        "chat template of %s renders differently from the server's; "
                        "rendering through the server", model_dir,
                    )  # fmt: skip
                    return None
        except Exception as exc:  # a missing tokenizer, a template error, a server error
            logger.warning("cannot render chat locally from %s (%r)", model_dir, exc)
            return None
        logger.info("rendering chat prompts locally with the tokenizer of %s", model_dir)
        return template

    async def render(
        self, messages: Messages, rendering: PromptRendering = DEFAULT_RENDERING
    ) -> list[int]:
        """Token ids of `messages`, rendered as vLLM's server renders them: the template
        variables in `chat_template_kwargs` that the template does not read are dropped,
        and a template that raises is the caller's error (`EngineRejected`)."""
        kwargs = self._template_kwargs(rendering.chat_template_kwargs)
        try:
            text = self._tokenizer.apply_chat_template(
                [_as_templates_read(message) for message in messages],
                add_generation_prompt=rendering.add_generation_prompt,
                continue_final_message=rendering.continue_final_message,
                tools=rendering.tools,
                tokenize=False,
                **kwargs,
            )
        except Exception as exc:  # the template's own refusal (jinja raise_exception)
            raise EngineRejected(f"the chat template refused the messages: {exc}") from exc
        return await self.tokenize(text, add_special_tokens=rendering.add_special_tokens)

    def _template_kwargs(self, asked: dict[str, Any]) -> dict[str, Any]:
        """The template variables of a request that this template reads (vLLM's rule)."""
        # the rendering's own fields win over variables of the same names, as in vLLM
        asked = {k: v for k, v in asked.items() if k not in PromptRendering.model_fields}
        if not asked:
            return {}
        from vllm.renderers.hf import resolve_chat_template_kwargs

        template = self._tokenizer.chat_template
        try:
            return resolve_chat_template_kwargs(self._tokenizer, template, asked)
        except ValueError as exc:
            raise EngineRejected(str(exc), param="chat_template_kwargs") from exc

    async def tokenize(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        if add_special_tokens:  # rare (a text completion asking for BOS): the wrapper
            encode = partial(self._tokenizer.encode, text, add_special_tokens=True)
            return list(await off_the_loop_if_long(encode, len(text)))
        # a text long enough to go to a thread goes through the wrapper: its batch call
        # releases the GIL while the Rust tokenizer works, a direct call would hold it
        encode = self._encode_short if len(text) < _INLINE_LIMIT else self._encode_wrapped
        return await off_the_loop_if_long(lambda: encode(text), len(text))


def _as_templates_read(message: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-shaped message as vLLM hands it to a chat template: no content is "",
    and a tool call's arguments are an object (JSON text that does not parse: {}, so
    that one bad turn in the history does not refuse every later one)."""
    calls = message.get("tool_calls")
    if message.get("content") is not None and not calls:
        return message
    shown = {**message, "content": message.get("content") or ""}
    if calls:
        shown["tool_calls"] = [
            {**call, "function": {**call["function"], "arguments": _arguments(call["function"])}}
            for call in calls
        ]
    return shown


def _arguments(function: dict[str, Any]) -> dict[str, Any]:
    text = function.get("arguments")
    if isinstance(text, dict):
        return text
    try:
        parsed = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _wrapped_encoder(tokenizer: Any) -> Callable[[str], list[int]]:
    """Text to ids without special tokens, through the Hugging Face wrapper."""
    return lambda text: list(tokenizer.encode(text, add_special_tokens=False))


def _fast_encoder(tokenizer: Any) -> Callable[[str], list[int]] | None:
    """Text to ids without special tokens for a short text, on the event loop, or None
    where the wrapper must do it. The Rust tokenizer behind a fast Hugging Face tokenizer,
    called directly, skips the batch wrapper around it (a measurable part of the front's
    time per plain request, lab/studies/plain-request-latency.md); it gives the same ids
    unless the tokenizer
    file sets truncation or padding, which the wrapper turns off per call. Not for long
    texts: the direct call holds the GIL throughout."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.truncation is not None or backend.padding is not None:
        return None
    return lambda text: backend.encode(text, add_special_tokens=False).ids


def load_tokenizer(model_path: Path) -> Any:
    """The model's Hugging Face tokenizer (blocking: call it off the event loop)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_path)
    except (OSError, ValueError) as exc:
        raise EngineUnavailable(f"{model_path}: cannot load the tokenizer: {exc}") from exc


def truncation_side_of(model_dir: Path) -> Literal["left", "right"]:
    """The side the model's tokenizer truncates from: its configuration's
    `truncation_side`, else right (transformers' default)."""
    try:
        config = json.loads((model_dir / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return "right"
    return "left" if config.get("truncation_side") == "left" else "right"
