"""A scripted engine for pure-logic tests: no model, exact control over each sample."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ttscale.engine.confidence import LOW_CONFIDENCE, first_low_window
from ttscale.engine.protocol import Generation, new_request_id
from ttscale.engine.types import (
    DEFAULT_RENDERING,
    EngineInfo,
    EngineStats,
    PromptRendering,
    Sample,
    SamplingSpec,
)


@dataclass(frozen=True)
class Scripted:
    """What one scripted sample produces: one token per character of `text`."""

    text: str
    seconds: float = 0.0
    entropy: float | None = None
    logprob: float = -0.5
    confidence: float | tuple[float, ...] = 1.0
    """Token confidences: one value for every token, or one per token (the last repeats)."""
    after_forced_close: str = ""
    """What a reasoning model answers when a thinking budget closes its thought."""


THOUGHT_CLOSES = "\u2021"
"""Where a scripted reasoning model's thought closes (its text thinks before it): one
character, so one token, as `</think>` is one token for a real model's tokenizer."""


Script = Callable[[list[int], SamplingSpec, int], Scripted]
"""(prompt ids, spec, index within the generate call) -> the sample. Strategies draw one
sample per call, so their sample number is `spec.seed` when the test sets seed 0."""


class ScriptedEngine:
    """Implements the engine protocol; each sample's text, tokens and duration are scripted.

    Abort is honoured like a real engine: an aborted sample reports the tokens it would
    have produced in proportion to the time it ran.
    """

    def __init__(self, script: Script, max_model_len: int = 4096, reasoning: bool = False) -> None:
        """`reasoning`: a reasoning model whose samples think until `THOUGHT_CLOSES`,
        split as the engines split them, and whose thinking budgets close the thought."""
        self._script = script
        self._running = 0
        self._reasoning = reasoning
        self.info = EngineInfo(
            model_name="scripted",
            max_model_len=max_model_len,
            backend="fake",
            reasoning_parser="scripted" if reasoning else None,
            thinking_budgets=reasoning,
            thought_closes=(ord(THOUGHT_CLOSES),) if reasoning else (),
        )
        self.calls: list[tuple[list[int], SamplingSpec]] = []
        self.request_ids: list[str | None] = []

    async def render_chat(
        self, messages: Sequence[dict[str, Any]], rendering: PromptRendering = DEFAULT_RENDERING
    ) -> list[int]:
        return [ord(c) for m in messages for c in m["content"]]

    async def check(self, spec: SamplingSpec) -> None:
        return None

    async def tokenize(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]

    async def detokenize(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(t) for t in token_ids)

    def generate(
        self,
        prompt_token_ids: Sequence[int],
        spec: SamplingSpec,
        n: int = 1,
        request_id: str | None = None,
    ) -> Generation:
        prompt = list(prompt_token_ids)
        self.calls.append((prompt, spec))
        self.request_ids.append(request_id)
        stops = [asyncio.Event() for _ in range(n)]

        async def run_sample(index: int) -> Sample:
            sample = await draw(index)
            return _split_thinking(sample, prompt) if self._reasoning else sample

        async def draw(index: int) -> Sample:
            scripted = self._script(prompt, spec, index)
            text = _with_thinking_budget(scripted, spec.thinking_token_budget)
            seconds = scripted.seconds
            tokens = [ord(c) for c in text][: spec.max_tokens]
            finish = "length" if len(text) > spec.max_tokens else "stop"
            stop_reason: str | int | None = next((s for s in spec.stop if text.endswith(s)), None)
            hit = next((i for i, t in enumerate(tokens) if t in spec.stop_token_ids), None)
            if hit is not None:  # as vLLM: the stop token ends the ids, not the text
                tokens, finish, stop_reason = tokens[: hit + 1], "stop", tokens[hit]
            confidences = _confidences(scripted, spec, len(tokens))
            cut = _low_confidence_cut(spec, confidences)
            if cut is not None:  # as the adapters do: aborted at the window that fell low
                seconds *= cut / len(tokens)
                tokens, confidences = tokens[:cut], confidences[:cut]
                finish, stop_reason = "abort", LOW_CONFIDENCE
            per_token = None if spec.logprobs is None else [scripted.logprob] * len(tokens)
            entropies = None if spec.logprobs is None else [scripted.entropy or 0.0] * len(tokens)
            self._running += 1
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                await asyncio.wait_for(stops[index].wait(), timeout=seconds)
                ran = (loop.time() - started) / seconds if seconds else 1.0
                done = tokens[: int(len(tokens) * min(ran, 1.0))]
                return Sample(
                    index, "".join(chr(t) for t in done), done, "abort", prompt_tokens=len(prompt)
                )
            except TimeoutError:
                return Sample(
                    index,
                    "".join(chr(t) for t in (tokens[:-1] if hit is not None else tokens)),
                    tokens,
                    finish,
                    stop_reason=stop_reason if finish != "length" else None,
                    prompt_tokens=len(prompt),
                    token_logprobs=per_token,
                    token_entropies=entropies,
                    token_confidences=confidences,
                )
            finally:
                self._running -= 1

        async def abort_samples(indices: Sequence[int]) -> None:
            for i in indices:
                stops[i].set()

        return Generation(request_id or new_request_id(), len(prompt), n, run_sample, abort_samples)

    async def num_running(self) -> int:
        return self._running

    async def check_health(self) -> None:
        return None

    async def stats(self) -> EngineStats:
        return EngineStats(running=self._running)

    async def close(self) -> None:
        return None


# --- a reasoning model, emulated ----------------------------------------------------------


def _with_thinking_budget(scripted: Scripted, budget: int | None) -> str:
    """The scripted text, its thought closed by force at `budget` characters (tokens)
    if it thinks longer, then answered with `after_forced_close`, as vLLM does."""
    text = scripted.text
    thought_ends = text.find(THOUGHT_CLOSES)
    if budget is None or 0 <= thought_ends <= budget:
        return text
    return text[:budget] + THOUGHT_CLOSES + scripted.after_forced_close


def _split_thinking(sample: Sample, prompt: list[int]) -> Sample:
    """The engines' split (`engine/reasoning.py`): thinking before the close, the answer
    part after it (empty while the thought is open); all answer once the prompt closed
    the thought."""
    if ord(THOUGHT_CLOSES) in prompt:
        sample.content = sample.text
        return sample
    thought, closes, answer = sample.text.partition(THOUGHT_CLOSES)
    sample.reasoning, sample.content = thought, answer
    sample.reasoning_tokens = len(thought)
    sample.thinking_span = len(thought) + len(closes)
    return sample


# --- DeepConf's online stop (`SamplingSpec.confidence_stop`), emulated -------------------


def _confidences(scripted: Scripted, spec: SamplingSpec, count: int) -> list[float] | None:
    """The scripted token confidences, reported when logprobs are asked (as the adapters)."""
    if spec.logprobs is None:
        return None
    given = scripted.confidence
    values = [float(given)] * count if isinstance(given, int | float) else list(given)[:count]
    return values + [values[-1]] * (count - len(values)) if values else [1.0] * count


def _low_confidence_cut(spec: SamplingSpec, confidences: list[float] | None) -> int | None:
    """Tokens a sample keeps when `confidence_stop` aborts it (None: it runs to its end)."""
    if spec.confidence_stop is None or confidences is None:
        return None
    return first_low_window(confidences, 0, spec.confidence_stop)


class FakeVerifier:
    """What every verifier declares besides its scores (`verifiers.protocol.Verifier`):
    fake scorers inherit it."""

    shape = None
    """Scores with the policy's model, as far as the budget's FLOPs are concerned."""

    def describe(self) -> dict[str, str]:
        return {"model": "fake", "backend": "test"}

    async def close(self) -> None:
        return None
