"""The prompt that asks a model which of N responses is the most consistent, fitted to
the model's context, and the response number read back from its reply.

Universal self-consistency (`universal_self_consistency`) shows the model its own N
responses, numbered from 1, and asks for the one most consistent with the others. The
prompt has to leave room for the reply in the context, so responses that do not fit are
cut in the middle (the opening and the conclusion are kept, a marker says how many
tokens were left out): the shortest responses stay whole and the longer ones share what
room is left equally. Kept apart from the strategy so that the prompt, the cut and the
parse can be checked without a model.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from ttscale.engine.protocol import Engine

SELECTOR_PROMPT = (
    "Here are several responses to the same question.\n\n"
    "Question: {question}\n\n"
    "{responses}\n\n"
    "Evaluate these responses and select the one most consistent with the others, by "
    "majority consensus. Begin your reply with 'The most consistent response is "
    "Response X', X being its number."
)
"""The default selector prompt, after Chen et al. 2023 (arXiv 2311.17311): `{responses}`
is the numbered responses, `{question}` the request's last message."""

PLACEHOLDERS = ("question", "responses")

MIN_SHOWN_TOKENS = 8
"""The fewest tokens of a response a cut may keep: below it the selector would compare
markers, not responses, and the selection is not made."""

_FIT_ATTEMPTS = 4
"""Re-renders a cut may take to fit: token counts shift a little where cut text is
re-tokenised and where the markers go, and each attempt takes the overflow off the room."""

_RESPONSE = re.compile(r"\bresponse\s*#?\s*(\d{1,6})\b", re.IGNORECASE)


def check_template(template: str) -> str:
    """`template` if it names `{responses}` and no placeholder but `{question}`."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"{exc}: write braces that are not placeholders as {{{{ }}}}") from exc
    stray = sorted(names - set(PLACEHOLDERS))
    if stray:
        raise ValueError(
            f"unknown placeholder {{{stray[0]}}}: the placeholders are "
            "{responses} and {question}"
        )
    if "responses" not in names:
        raise ValueError("must contain {responses}, where the numbered responses go")
    try:
        template.format(question="", responses="")
    except (IndexError, ValueError) as exc:
        raise ValueError(f"{exc}: write braces that are not placeholders as {{{{ }}}}") from exc
    return template


def number_responses(texts: Sequence[str]) -> str:
    """The responses as the selector reads them: "Response 1:" and the text, and so on."""
    return "\n\n".join(f"Response {k}:\n{text}" for k, text in enumerate(texts, start=1))


def read_choice(reply: str, count: int) -> tuple[int | None, list[int]]:
    """The first "Response k" of `reply` with k in 1..count (None if none), and every
    number the reply gave after "Response" (what the evidence shows of a miss)."""
    named = [int(found.group(1)) for found in _RESPONSE.finditer(reply)]
    return next((k for k in named if 1 <= k <= count), None), named


@dataclass(frozen=True)
class FittedPrompt:
    prompt_ids: list[int]
    """The rendered prompt, short enough to leave the reply its tokens."""
    cut: list[int]
    """Response numbers (from 1) whose middle was cut to fit."""
    kept_tokens: int | None
    """The tokens each cut response kept (None: nothing was cut)."""


async def fit_prompt(
    engine: Engine, template: str, question: str, texts: Sequence[str], reply_tokens: int
) -> FittedPrompt | None:
    """The selector prompt over `texts`, rendered as one user turn with the model's chat
    template, cut to leave `reply_tokens` of the context; None if even responses cut to
    `MIN_SHOWN_TOKENS` each cannot fit."""
    limit = engine.info.max_model_len - reply_tokens

    async def render(shown: Sequence[str]) -> list[int]:
        content = template.format(question=question, responses=number_responses(shown))
        return await engine.render_chat([{"role": "user", "content": content}])

    prompt = await render(texts)
    if len(prompt) <= limit:
        return FittedPrompt(prompt, [], None)
    tokens = [await engine.tokenize(text) for text in texts]
    room = limit - (len(prompt) - sum(len(t) for t in tokens))
    for _ in range(_FIT_ATTEMPTS):
        share = equal_share([len(t) for t in tokens], room)
        if share < MIN_SHOWN_TOKENS:
            return None
        shown = [
            text if len(ids) <= share else await cut_middle(engine, ids, share)
            for text, ids in zip(texts, tokens, strict=True)
        ]
        prompt = await render(shown)
        if len(prompt) <= limit:
            cut = [k for k, ids in enumerate(tokens, start=1) if len(ids) > share]
            return FittedPrompt(prompt, cut, share)
        room -= len(prompt) - limit
    return None


def equal_share(lengths: Sequence[int], room: int) -> int:
    """The most tokens each response may keep so that all fit in `room`: responses
    shorter than the share keep all of theirs, and the rest share what they leave."""
    left = room
    for rank, length in enumerate(sorted(lengths)):
        share = left // (len(lengths) - rank)
        if length > share:
            return share
        left -= length
    return max(lengths, default=0)


async def cut_middle(engine: Engine, token_ids: Sequence[int], keep: int) -> str:
    """The text of `token_ids` with its middle left out so that `keep` tokens remain: the
    opening and the conclusion, around a marker saying how many tokens were cut."""
    head = keep // 2
    tail = keep - head
    opening = await engine.detokenize(token_ids[:head])
    ending = await engine.detokenize(token_ids[len(token_ids) - tail :] if tail else [])
    return f"{opening}\n[... {len(token_ids) - keep} tokens cut ...]\n{ending}"
