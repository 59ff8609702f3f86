"""Render chat prompts with a local copy of the served model's tokenizer.

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
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

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

_INLINE_CHARS = 4096
"""Longer texts are tokenised in a thread, so one huge prompt cannot stall the loop."""


class LocalChatTemplate:
    """The served model's chat template and tokenizer, run in this process."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    @classmethod
    async def matching(
        cls, model_dir: str | Path, server_render: Callable[[Messages], Awaitable[list[int]]]
    ) -> LocalChatTemplate | None:
        """The template of `model_dir` if it renders every probe as the server does;
        None (and a warning saying why) otherwise."""
        try:
            template = cls(await asyncio.to_thread(_load_tokenizer, str(model_dir)))
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

    async def render(self, messages: Messages) -> list[int]:
        text = self._tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=False
        )

        def encode() -> list[int]:
            return list(self._tokenizer.encode(text, add_special_tokens=False))

        return encode() if len(text) < _INLINE_CHARS else await asyncio.to_thread(encode)


def _load_tokenizer(model_dir: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)
