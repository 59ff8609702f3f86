"""Log-probabilities in responses take vLLM's server's shapes: the sampled token first,
a chat position shows its first `top_logprobs` entries, a text position its first
`logprobs + 1`, and minus infinity reads -9999.0."""

from __future__ import annotations

from ttscale.engine.types import TokenLogprob
from ttscale.server.api.logprobs import ChatLogprobs, CompletionLogprobs, logprobs_of

# the sampled token " b" ranks third: vLLM lists it first, then the top two
POSITION = (
    TokenLogprob(" b", -2.0, 7),
    TokenLogprob(" a", -0.5, 5),
    TokenLogprob("é", float("-inf"), 9),
)
LAST = (TokenLogprob("!", -0.1, 3),)


def test_a_chat_position_shows_the_sampled_token_and_its_first_entries():
    content = ChatLogprobs.of([POSITION, LAST], top_logprobs=2).content
    assert content is not None
    first = content[0]
    assert (first.token, first.logprob, first.bytes) == (" b", -2.0, [32, 98])
    assert [(t.token, t.logprob) for t in first.top_logprobs] == [(" b", -2.0), (" a", -0.5)]
    assert [t.token for t in content[1].top_logprobs] == ["!"]


def test_a_chat_position_with_no_alternatives_asked_lists_none():
    content = ChatLogprobs.of([POSITION], top_logprobs=0).content
    assert content is not None and content[0].top_logprobs == []


def test_a_text_completion_lists_one_more_entry_and_floors_minus_infinity():
    logprobs = CompletionLogprobs.of([POSITION, LAST], logprobs=2)
    assert logprobs.tokens == [" b", "!"]
    assert logprobs.text_offset == [0, 2]
    assert logprobs.token_logprobs == [-2.0, -0.1]
    assert logprobs.top_logprobs == [{" b": -2.0, " a": -0.5, "é": -9999.0}, {"!": -0.1}]


def test_nothing_is_shown_unless_asked_and_kept():
    assert logprobs_of("chat", [POSITION], None) is None
    assert logprobs_of("text", None, 2) is None
    assert isinstance(logprobs_of("text", [POSITION], 0), CompletionLogprobs)
