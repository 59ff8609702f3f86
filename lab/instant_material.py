"""What the instant engines say: real token ids of the served model's tokenizer, their
text, and top-k log-probabilities shaped like a language model's, built once.

An instant engine answers at once, so the front's own work per token is all that is
left to measure; for that work to be the work it does under a real model, the samples
must look like a model's: token ids with their decoded pieces, paragraphs ending in a
blank line (what step search stops at), a `\\boxed{}` answer at the end (what the votes
read), and per position the sampled token's log-probability and the top k by rank, as
vLLM reports them, with confidence that varies along a trace and between traces (what
inverse entropy weighs and DeepConf's online stop watches).

`Material.plan` turns (trace, max_tokens, stop strings) into the sample to produce;
everything is cached per key, so producing a sample costs list slices, not Python work
per token. `trace_index` picks a trace from a request id, so a run is reproducible.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PARAGRAPHS = (
    "Let us work through the problem one step at a time, writing down each quantity "
    "before we use it, so that nothing is lost along the way.",
    "First we find how many apples the farmer picked in the morning: he picked 3 rows "
    "of 4 trees, and each tree gave him 5 apples, so that is 60 apples in all.",
    "Next we take away the apples that were sold at the market, which were 48, and we "
    "keep the rest for the afternoon, when the price changes again.",
    "Then we check the result against the question: it asks for the apples that are "
    "left at the end of the day, not for the money that was made.",
    "Finally we add the apples from the second basket, which held half as many as the "
    "first one, and we write the total as the answer.",
)
ANSWERS = ("12", "12", "7", "12", "9", "12", "12", "15")
"""The answer of trace i is ANSWERS[i % 8]: a plurality for 12, with dissent."""
TAIL = " So the answer is \\boxed{{{}}}."
"""What follows a trace's body: its answer, as a math answer is written."""
LEVELS = 16
"""Shapes of a position's top-k distribution, from peaked (0) to flat (15)."""
TOP_K = 20
"""vLLM's largest `max_logprobs` as ttscale starts it."""


@dataclass(frozen=True, slots=True)
class Plan:
    """One sample as an instant engine produces it."""

    token_ids: list[int]
    pieces: list[str]
    """The decoded piece of each token (their join is the text)."""
    levels: list[int]
    """The distribution shape of each position (an index below `LEVELS`)."""
    finish_reason: str
    stop_reason: str | None
    text: str
    answer: str


def trace_index(key: str, traces: int) -> int:
    """A trace for a request id (or seed), the same in every process."""
    return zlib.crc32(key.encode()) % traces


class Material:
    """Traces of real tokens and their log-probabilities for one tokenizer."""

    def __init__(self, tokenizer: Any, traces: int = 32, length: int = 8192, seed: int = 0):
        self.tokenizer = tokenizer
        self.traces = traces
        rng = np.random.default_rng(seed)
        paragraph_ids = [tokenizer.encode(p + "\n\n", add_special_tokens=False) for p in PARAGRAPHS]
        self._body: list[list[int]] = []
        self._levels: list[list[int]] = []
        for index in range(traces):
            ids: list[int] = []
            order = rng.permutation(len(PARAGRAPHS))
            while len(ids) < length:
                for p in order:
                    ids.extend(paragraph_ids[p])
            self._body.append(ids[:length])
            self._levels.append(_level_profile(rng, length, doubtful=index % 4 == 3))
        self._tails = {
            answer: tokenizer.encode(TAIL.format(answer), add_special_tokens=False)
            for answer in set(ANSWERS)
        }
        vocabulary = sorted({t for ids in paragraph_ids for t in ids})
        vocabulary += sorted({t for ids in self._tails.values() for t in ids})
        self._alternatives = vocabulary[: TOP_K + 1]
        self._pieces = {t: tokenizer.decode([t]) for t in set(vocabulary)}
        self._distributions = [_top_logprobs(level) for level in range(LEVELS)]
        self._plans: dict[tuple[int, int, tuple[str, ...]], Plan] = {}

    def plan(self, trace: int, max_tokens: int, stop: Sequence[str] = ()) -> Plan:
        """The sample of `trace` under `max_tokens` and `stop` strings: the trace's body,
        then its answer, `max_tokens` tokens in all ("stop": an end of sequence follows
        the answer), or cut after the first stop string ("stop", with that string)."""
        key = (trace, max_tokens, tuple(stop))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._make_plan(trace, max_tokens, tuple(stop))
        return plan

    def _make_plan(self, trace: int, max_tokens: int, stop: tuple[str, ...]) -> Plan:
        answer = ANSWERS[trace % len(ANSWERS)]
        tail = self._tails[answer]
        body_length = max(0, max_tokens - len(tail))
        ids = self._body[trace][:body_length] + tail[: max_tokens - body_length]
        finish, reason = ("stop", None) if body_length else ("length", None)
        pieces = [self._pieces[t] for t in ids]
        if stop:
            text = ""
            for end, piece in enumerate(pieces, start=1):
                text += piece
                found = next((s for s in stop if s in text[-len(s) - len(piece) :]), None)
                if found is not None:
                    ids, pieces = ids[:end], pieces[:end]
                    finish, reason = "stop", found
                    break
        levels = self._levels[trace][: len(ids)]
        return Plan(ids, pieces, levels, finish, reason, "".join(pieces), answer)

    def position(self, token_id: int, level: int, k: int) -> list[tuple[int, float, int]]:
        """(token id, log-probability, rank) of one position as vLLM orders them: the
        sampled token first (rank 1 here), then the rest of the top k by rank."""
        values = self._distributions[level]
        entries = [(token_id, values[0], 1)]
        others = (t for t in self._alternatives if t != token_id)
        for rank, other in zip(range(2, k + 1), others, strict=False):
            entries.append((other, values[rank - 1], rank))
        return entries

    def piece(self, token_id: int) -> str:
        return self._pieces[token_id]


def _level_profile(rng: np.random.Generator, length: int, *, doubtful: bool) -> list[int]:
    """Distribution shapes along a trace: mostly confident; a doubtful trace turns unsure
    for 512 positions from its 128th on (where DeepConf's watch cuts it)."""
    levels = rng.integers(0, 7, size=length)
    if doubtful:
        levels[128:640] = rng.integers(9, LEVELS, size=len(levels[128:640]))
    return [int(v) for v in levels]


def _top_logprobs(level: int) -> list[float]:
    """Top-20 log-probabilities of one shape: a power law over ranks whose exponent
    falls from 4 (peaked) to 0.3 (flat), holding from 99% to 50% of the mass."""
    exponent = 4.0 - 3.7 * level / (LEVELS - 1)
    mass = 0.99 - 0.49 * level / (LEVELS - 1)
    weights = [r**-exponent for r in range(1, TOP_K + 1)]
    total = sum(weights)
    return [math.log(mass * w / total) for w in weights]
