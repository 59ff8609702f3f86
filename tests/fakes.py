"""A scripted engine for pure-logic tests: no model, exact control over each sample."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from server.engine.protocol import Generation, new_request_id
from server.engine.types import EngineInfo, Sample, SamplingSpec

Script = Callable[[list[int], SamplingSpec, int], tuple[str, list[int], float]]
"""(prompt ids, spec, sample index) -> (text, token ids, seconds the sample takes)."""


class ScriptedEngine:
    """Implements the engine protocol; each sample's text, tokens and duration are scripted.

    Abort is honoured like a real engine: an aborted sample reports the tokens it would
    have produced in proportion to the time it ran.
    """

    def __init__(self, script: Script, max_model_len: int = 4096) -> None:
        self._script = script
        self._running = 0
        self.info = EngineInfo(model_name="scripted", max_model_len=max_model_len, backend="fake")
        self.calls: list[tuple[list[int], SamplingSpec]] = []

    async def render_chat(self, messages: Sequence[dict[str, Any]]) -> list[int]:
        return [ord(c) for m in messages for c in m["content"]]

    async def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    async def detokenize(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(t) for t in token_ids)

    def generate(
        self, prompt_token_ids: Sequence[int], spec: SamplingSpec, request_id: str | None = None
    ) -> Generation:
        prompt = list(prompt_token_ids)
        self.calls.append((prompt, spec))
        stops = [asyncio.Event() for _ in range(spec.n)]

        async def run_sample(index: int) -> Sample:
            text, tokens, seconds = self._script(prompt, spec, index)
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
                return Sample(index, text, tokens, "stop", prompt_tokens=len(prompt))
            finally:
                self._running -= 1

        async def abort_samples(indices: Sequence[int]) -> None:
            for i in indices:
                stops[i].set()

        return Generation(
            request_id or new_request_id(), len(prompt), spec.n, run_sample, abort_samples
        )

    async def num_running(self) -> int:
        return self._running

    async def close(self) -> None:
        return None
