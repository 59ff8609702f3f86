"""An in-process engine that answers at once: ttscale's own cost per token, alone.

`InstantLLM` stands where vLLM's `AsyncLLM` stands under ttscale's in-process adapter
(`LocalVLLMEngine`), and speaks the part of it the adapter uses: `generate` yields vLLM's
own `RequestOutput`s (final only, or one token per delta while a confidence watch reads
them), with the token ids, text, top-k `Logprob`s, finish and stop reasons a model would
give (`instant_material.Material`), and `abort` stops a sample at its next token as
vLLM does (a last, empty delta with finish reason "abort"). So everything above it runs
unchanged: the adapter's logprob reductions, strategies, verifiers, the HTTP server.

What the real engine's front process would also do per token (vLLM's output processor:
detokenising, building the `Logprob` objects) is not here: the positions are built once
and shared, so the instant engine's own per-token cost stays small; `own_cost` in
`lab.front_ceiling` measures it, and `lab.output_processing` measures vLLM's part apart.

    engine = instant_engine(model_dir)   # a LocalVLLMEngine over an InstantLLM
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from lab.instant_material import Material, Plan, trace_index
from ttscale.engine.local_tokenizer import load_tokenizer
from ttscale.engine.local_vllm import LocalVLLMEngine, sampling_params
from ttscale.engine.model_shape import read_model_shape
from ttscale.engine.types import EngineInfo, SamplingSpec


class InstantLLM:
    """The part of vLLM's `AsyncLLM` that `LocalVLLMEngine` uses, producing at once."""

    def __init__(self, material: Material, max_model_len: int = 8192) -> None:
        from vllm.logprobs import Logprob
        from vllm.outputs import CompletionOutput, RequestOutput
        from vllm.sampling_params import RequestOutputKind

        self._material = material
        self._tokenizer = material.tokenizer
        self._aborted: set[str] = set()
        self._running: set[str] = set()
        self._positions: dict[tuple[int, int, int], dict[int, Any]] = {}
        self._logprob, self._completion, self._request = Logprob, CompletionOutput, RequestOutput
        self._delta = RequestOutputKind.DELTA
        self.max_model_len = max_model_len
        self.errored = False
        self.generated_tokens = 0
        """Tokens produced since start (aborted samples' included)."""

    def get_tokenizer(self) -> Any:
        return self._tokenizer

    def get_num_unfinished_requests(self) -> int:
        return len(self._running)

    async def abort(self, request_id: str | Sequence[str], *args: Any, **kwargs: Any) -> None:
        ids = [request_id] if isinstance(request_id, str) else list(request_id)
        self._aborted.update(i for i in ids if i in self._running)

    def shutdown(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def generate(
        self, prompt: Any, params: Any, request_id: str, *args: Any, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """vLLM's outputs of one request (n=1): the final one, or one delta per token."""
        prompt_ids = list(prompt["prompt_token_ids"])
        key = request_id if params.seed is None else f"seed-{params.seed}"
        plan = self._material.plan(
            trace_index(key, self._material.traces), params.max_tokens, params.stop or ()
        )
        self._running.add(request_id)
        try:
            if params.output_kind == self._delta:
                async for output in self._deltas(plan, params, prompt_ids, request_id):
                    yield output
            else:
                await asyncio.sleep(0)  # one scheduling step: the others' samples run too
                done = len(plan.token_ids)
                finish = plan.finish_reason
                if request_id in self._aborted:
                    done, finish = 0, "abort"
                self.generated_tokens += done
                yield self._output(plan, params, prompt_ids, request_id, 0, done, finish)
        finally:
            self._running.discard(request_id)
            self._aborted.discard(request_id)

    async def _deltas(
        self, plan: Plan, params: Any, prompt_ids: list[int], request_id: str
    ) -> AsyncIterator[Any]:
        last = len(plan.token_ids)
        for index in range(last):
            if request_id in self._aborted:  # vLLM's last delta after an abort: empty
                yield self._output(plan, params, prompt_ids, request_id, index, index, "abort")
                return
            finish = plan.finish_reason if index + 1 == last else None
            self.generated_tokens += 1
            yield self._output(plan, params, prompt_ids, request_id, index, index + 1, finish)
            await asyncio.sleep(0)

    def _output(
        self,
        plan: Plan,
        params: Any,
        prompt_ids: list[int],
        request_id: str,
        start: int,
        end: int,
        finish: str | None,
    ) -> Any:
        logprobs = None
        if params.logprobs is not None:
            k = params.logprobs
            logprobs = [
                self._position(plan.token_ids[i], plan.levels[i], k) for i in range(start, end)
            ]
        text = (
            plan.text
            if (start, end) == (0, len(plan.token_ids))
            else "".join(plan.pieces[start:end])
        )
        if finish == "stop" and plan.stop_reason and not params.include_stop_str_in_output:
            text = text.removesuffix(plan.stop_reason)  # as vLLM leaves a stop string out
        completion = self._completion(
            index=0,
            text=text,
            token_ids=plan.token_ids[start:end],
            cumulative_logprob=None,
            logprobs=logprobs,
            finish_reason=finish,
            stop_reason=plan.stop_reason if finish == "stop" else None,
        )
        return self._request(
            request_id=request_id,
            prompt=None,
            prompt_token_ids=prompt_ids,
            prompt_logprobs=None,
            outputs=[completion],
            finished=finish is not None,
            num_cached_tokens=0,
        )

    def _position(self, token_id: int, level: int, k: int) -> dict[int, Any]:
        """One position's `Logprob`s, built once per (token, shape, k) and shared."""
        key = (token_id, level, k)
        position = self._positions.get(key)
        if position is None:
            position = self._positions[key] = {
                t: self._logprob(logprob=lp, rank=rank, decoded_token=self._material.piece(t))
                for t, lp, rank in self._material.position(token_id, level, k)
            }
        return position


class InstantEngine(LocalVLLMEngine):
    """ttscale's in-process adapter over an `InstantLLM`.

    `check` builds vLLM's `SamplingParams` as the adapter's own check does but leaves out
    vLLM's `verify` against a model config, which an instant engine has none of (and
    which is vLLM's cost, not ttscale's)."""

    async def check(self, spec: SamplingSpec) -> None:
        sampling_params(spec, 0, self.info.sampling_defaults)


def instant_engine(model_dir: Path, name: str | None = None, material: Material | None = None):
    """A `LocalVLLMEngine` (as `InstantEngine`) over an `InstantLLM` speaking with the
    tokenizer and chat template of `model_dir`."""
    material = material or Material(load_tokenizer(model_dir))
    llm = InstantLLM(material)
    info = EngineInfo(
        model_name=name or model_dir.name,
        max_model_len=llm.max_model_len,
        backend="instant",
        model_path=str(model_dir),
        shape=read_model_shape(model_dir),
        dtype="float32",
        max_token_id=len(material.tokenizer) - 1,
    )
    return InstantEngine(llm, info)
