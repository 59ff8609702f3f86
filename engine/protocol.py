"""The small protocol through which strategies and verifiers use an engine.

An adapter (in-process vLLM, remote vLLM servers, or a scripted fake in tests) only
has to say how to run one sample and how to abort samples; `Generation` turns that into
a handle that can be awaited for all samples, iterated as samples finish, or aborted
with the partial work of every unfinished sample reported (so it can be billed).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from typing import Any, Protocol, runtime_checkable

from .types import (
    DEFAULT_RENDERING,
    EngineInfo,
    EngineStats,
    GenerationResult,
    PromptRendering,
    Sample,
    SamplingSpec,
)

logger = logging.getLogger(__name__)

RunSample = Callable[[int], Awaitable[Sample]]
AbortSamples = Callable[[Sequence[int]], Awaitable[None]]

_ABORT_RETRY_SECONDS = 0.25
_ABORT_MAX_RETRIES = 40


class EngineError(RuntimeError):
    """The engine failed a request (not the caller's fault)."""


class EngineRejected(ValueError):
    """The engine refuses a request as it was asked (the caller's to fix, as vLLM's 400s
    are): `param` names the request field where that is known."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class EngineUnavailable(EngineError):
    """The engine cannot be started or reached at all."""


class EngineSlow(EngineUnavailable):
    """A health probe got no answer in time: the engine (or its router) may be dead, or
    only too busy to answer, so whoever watches it should wait longer before giving up
    than on a refused connection or an error status."""


def new_request_id(prefix: str = "gen") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


class Generation:
    """Handle on the `n` samples of one `generate` call.

    - `await generation` (or `await generation.result()`) waits for every sample;
    - `async for sample in generation` yields samples in the order they finish;
    - `await generation.abort()` stops unfinished samples and returns all samples, the
      aborted ones with `finish_reason="abort"` and the tokens they had generated.

    If the awaiting coroutine is cancelled (a client went away), the samples are
    aborted rather than leaked.
    """

    def __init__(
        self,
        request_id: str,
        prompt_tokens: int,
        n: int,
        run_sample: RunSample,
        abort_samples: AbortSamples,
    ) -> None:
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        self._abort_samples = abort_samples
        self._aborting = False
        self._tasks: list[asyncio.Task[Sample]] = [
            asyncio.create_task(run_sample(i), name=sample_request_id(request_id, i))
            for i in range(n)
        ]
        logger.debug("%s: %d sample(s) submitted, prompt %d tokens", request_id, n, prompt_tokens)

    @property
    def aborting(self) -> bool:
        """Adapters check this before starting a sample, so a late start is skipped."""
        return self._aborting

    @property
    def n(self) -> int:
        return len(self._tasks)

    def done(self) -> bool:
        return all(t.done() for t in self._tasks)

    def __await__(self) -> Generator[Any, None, GenerationResult]:
        return self.result().__await__()

    async def result(self) -> GenerationResult:
        try:
            await asyncio.wait(self._tasks)
        except asyncio.CancelledError:
            await asyncio.shield(self.abort())
            raise
        return self._collect()

    async def __aiter__(self) -> AsyncIterator[Sample]:
        pending = set(self._tasks)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=self._tasks.index):
                    yield task.result()
        except (asyncio.CancelledError, GeneratorExit):
            await asyncio.shield(self.abort())
            raise

    async def abort(self) -> GenerationResult:
        """Abort unfinished samples; return every sample, partial ones included."""
        self._aborting = True
        unfinished = sum(not t.done() for t in self._tasks)
        if unfinished:
            logger.debug("%s: aborting %d unfinished sample(s)", self.request_id, unfinished)
        for _ in range(_ABORT_MAX_RETRIES):
            unfinished = [i for i, t in enumerate(self._tasks) if not t.done()]
            if not unfinished:
                break
            await self._abort_samples(unfinished)
            await asyncio.wait([self._tasks[i] for i in unfinished], timeout=_ABORT_RETRY_SECONDS)
        else:
            stuck = [t for t in self._tasks if not t.done()]
            logger.error("%s: %d samples did not stop after abort", self.request_id, len(stuck))
            for task in stuck:
                task.cancel()
            await asyncio.wait(stuck)
        return self._collect()

    def _collect(self) -> GenerationResult:
        samples: list[Sample] = []
        errors: list[BaseException] = []
        for index, task in enumerate(self._tasks):
            if task.cancelled():
                samples.append(Sample(index=index, text="", token_ids=[], finish_reason="abort"))
                continue
            exc = task.exception()
            if exc is not None:
                errors.append(exc)
                continue
            samples.append(task.result())
        rejected = next((e for e in errors if isinstance(e, EngineRejected)), None)
        if rejected is not None:  # the request's own fault: say so, as the engine did
            raise rejected
        if errors:
            raise EngineError(f"{len(errors)} of {self.n} samples failed: {errors[0]!r}") from (
                errors[0]
            )
        return GenerationResult(self.request_id, self.prompt_tokens, samples)


@runtime_checkable
class Engine(Protocol):
    """What strategies and verifiers may ask of an engine.

    Continuation (step-level search) is plain `generate` on `prompt + sample.token_ids`:
    adapters send token ids, never re-tokenised text, so the shared prefix hits the
    engine's prefix cache.
    """

    @property
    def info(self) -> EngineInfo: ...

    async def render_chat(
        self, messages: Sequence[dict[str, Any]], rendering: PromptRendering = DEFAULT_RENDERING
    ) -> list[int]:
        """Token ids of `messages` rendered with the model's own chat template; a template
        that refuses the chat (or `rendering`) raises `EngineRejected`."""
        ...

    async def check(self, spec: SamplingSpec) -> None:
        """Raise `EngineRejected` where the engine would refuse to sample with `spec`
        (a token id outside the vocabulary, a JSON Schema it cannot compile), so that the
        caller hears it before anything runs. An engine that cannot tell in advance
        refuses when the sample starts instead."""
        ...

    async def tokenize(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; with `add_special_tokens`, the tokenizer's own (BOS)."""
        ...

    async def detokenize(self, token_ids: Sequence[int]) -> str:
        """Text of `token_ids`, special tokens (e.g. end of turn) included."""
        ...

    def generate(
        self,
        prompt_token_ids: Sequence[int],
        spec: SamplingSpec,
        n: int = 1,
        request_id: str | None = None,
    ) -> Generation:
        """Start `n` samples; sample i is seeded `spec.sample_seed(i)` and has the engine
        request id `sample_request_id(request_id, i)`."""
        ...

    async def num_running(self) -> int:
        """Samples this engine is still working on (all requests)."""
        ...

    async def check_health(self) -> None:
        """Raise `EngineUnavailable` if the engine can no longer serve (its process died,
        its server does not answer)."""
        ...

    async def stats(self) -> EngineStats:
        """Running and waiting requests, KV-cache use and prefix-cache counters."""
        ...

    async def close(self) -> None: ...


def sample_request_id(request_id: str, index: int) -> str:
    """Engine-level id of one sample: adapters fan `n` out into `n` single requests."""
    return f"{request_id}#{index}"
