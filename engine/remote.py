"""Adapter to one or more OpenAI-compatible vLLM servers over HTTP.

Same protocol as the in-process engine, so strategies run unchanged against remote
replicas. Prompts travel as token ids (`/v1/completions` accepts a list of ints) so the
replica never re-tokenises and its prefix cache sees exactly the ids we continue from.
Every sample is streamed: that is how an aborted sample still reports the tokens it
generated, and closing the stream is how vLLM is told to stop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from .confidence import LOW_CONFIDENCE, first_low_window, topk_confidence
from .entropy import topk_entropy
from .protocol import (
    EngineError,
    EngineUnavailable,
    Generation,
    new_request_id,
    sample_request_id,
)
from .types import EngineInfo, EngineStats, ModelShape, Sample, SamplingSpec

logger = logging.getLogger(__name__)


@dataclass
class _Replica:
    base_url: str
    in_flight: int = 0


@dataclass
class _Partial:
    """What one streamed sample has produced so far."""

    text: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    token_entropies: list[float] = field(default_factory=list)
    token_confidences: list[float] = field(default_factory=list)
    label_logprobs: list[dict[int, float]] = field(default_factory=list)
    low_confidence: bool = False
    """Its window confidence fell below `SamplingSpec.confidence_stop`: stop reading."""
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0


class RemoteVLLMEngine:
    """`Engine` backed by vLLM OpenAI-compatible servers (`/v1/completions`)."""

    def __init__(
        self,
        base_urls: Sequence[str],
        info: EngineInfo,
        *,
        api_key: str | None = None,
        timeout_s: float = 600.0,
    ) -> None:
        if not base_urls:
            raise ValueError("at least one remote URL is needed")
        self._replicas = [_Replica(url.rstrip("/")) for url in base_urls]
        self._info = info
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(timeout_s, connect=10.0)
        )

    @classmethod
    async def connect(
        cls,
        base_urls: Sequence[str],
        *,
        api_key: str | None = None,
        shape: ModelShape | None = None,
        model_path: str | None = None,
    ) -> RemoteVLLMEngine:
        """Ask the first replica what it serves; fail clearly if it cannot be reached."""
        base = base_urls[0].rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            async with httpx.AsyncClient(headers=headers, timeout=10.0) as client:
                response = await client.get(f"{base}/v1/models")
                response.raise_for_status()
        except httpx.HTTPError as exc:
            raise EngineUnavailable(f"cannot reach vLLM server {base}: {exc}") from exc
        model = response.json()["data"][0]
        info = EngineInfo(
            model_name=model["id"],
            max_model_len=int(model.get("max_model_len") or 4096),
            backend="vllm-remote",
            model_path=model_path,
            shape=shape,
        )
        return cls(base_urls, info, api_key=api_key)

    @property
    def info(self) -> EngineInfo:
        return self._info

    async def render_chat(self, messages: Sequence[dict[str, Any]]) -> list[int]:
        body = {
            "model": self._info.model_name,
            "messages": list(messages),
            "add_generation_prompt": True,
            "add_special_tokens": False,
        }
        return (await self._post_json("/tokenize", body))["tokens"]

    async def tokenize(self, text: str) -> list[int]:
        body = {"model": self._info.model_name, "prompt": text, "add_special_tokens": False}
        return (await self._post_json("/tokenize", body))["tokens"]

    async def detokenize(self, token_ids: Sequence[int]) -> str:
        body = {"model": self._info.model_name, "tokens": list(token_ids)}
        return (await self._post_json("/detokenize", body))["prompt"]

    async def _post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        replica = self._replicas[0]
        try:
            response = await self._client.post(f"{replica.base_url}{path}", json=body)
        except httpx.HTTPError as exc:
            raise EngineError(f"{replica.base_url}{path}: {exc}") from exc
        if response.status_code != 200:
            raise EngineError(f"{replica.base_url}{path}: HTTP {response.status_code}")
        return response.json()

    def generate(
        self,
        prompt_token_ids: Sequence[int],
        spec: SamplingSpec,
        n: int = 1,
        request_id: str | None = None,
    ) -> Generation:
        request_id = request_id or new_request_id()
        prompt_ids = list(prompt_token_ids)
        # All samples of one call go to one replica so they share its prefix cache.
        replica = min(self._replicas, key=lambda r: r.in_flight)
        stop_events = [asyncio.Event() for _ in range(n)]

        async def run_sample(index: int) -> Sample:
            if stop_events[index].is_set():  # aborted before it started: nothing spent
                return _to_sample(index, _Partial(), aborted=True)
            partial = _Partial(prompt_tokens=len(prompt_ids))
            replica.in_flight += 1
            stream = asyncio.create_task(
                self._stream_sample(replica, prompt_ids, spec, index, request_id, partial)
            )
            stopper = asyncio.create_task(stop_events[index].wait())
            try:
                await asyncio.wait({stream, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                replica.in_flight -= 1
                stopper.cancel()
            if not stream.done():
                stream.cancel()  # closes the HTTP stream: vLLM aborts the request
                await asyncio.wait({stream})
                return _to_sample(index, partial, aborted=True)
            stream.result()  # re-raise transport errors
            return _to_sample(index, partial, aborted=False)

        async def abort_samples(indices: Sequence[int]) -> None:
            for index in indices:
                stop_events[index].set()

        return Generation(request_id, len(prompt_ids), n, run_sample, abort_samples)

    async def _stream_sample(
        self,
        replica: _Replica,
        prompt_ids: list[int],
        spec: SamplingSpec,
        index: int,
        request_id: str,
        partial: _Partial,
    ) -> None:
        body = _completion_body(self._info.model_name, prompt_ids, spec, index)
        body["request_id"] = sample_request_id(request_id, index)
        url = f"{replica.base_url}/v1/completions"
        try:
            async with self._client.stream("POST", url, json=body) as response:
                if response.status_code != 200:
                    detail = (await response.aread()).decode(errors="replace")[:500]
                    raise EngineError(f"{url}: HTTP {response.status_code}: {detail}")
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    _apply_chunk(json.loads(payload), partial, spec)
                    if partial.low_confidence:
                        break  # leaving the stream closes it: vLLM aborts the request
        except httpx.HTTPError as exc:
            raise EngineError(f"{url}: {exc}") from exc

    async def num_running(self) -> int:
        return sum(r.in_flight for r in self._replicas)

    async def stats(self) -> EngineStats:
        """The replicas' own Prometheus figures, summed (KV-cache use: averaged)."""
        scraped = [await self._scrape(r.base_url) for r in self._replicas]
        alive = [s for s in scraped if s is not None]
        total = EngineStats()
        for values in alive:
            total.running += int(values.get("vllm:num_requests_running", 0))
            total.waiting += int(values.get("vllm:num_requests_waiting", 0))
            total.kv_cache_usage += values.get("vllm:kv_cache_usage_perc", 0.0) / len(alive)
            total.prefix_cache_queries += int(values.get("vllm:prefix_cache_queries_total", 0))
            total.prefix_cache_hits += int(values.get("vllm:prefix_cache_hits_total", 0))
        return total

    async def _scrape(self, base_url: str) -> dict[str, float] | None:
        try:
            response = await self._client.get(f"{base_url}/metrics", timeout=2.0)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        return parse_prometheus(response.text)

    async def check_health(self) -> None:
        """Healthy while at least one replica answers its `/health`."""
        for replica in self._replicas:
            try:
                response = await self._client.get(f"{replica.base_url}/health", timeout=2.0)
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                return
        raise EngineUnavailable("no vLLM replica answers its /health")

    async def close(self) -> None:
        await self._client.aclose()


def parse_prometheus(text: str) -> dict[str, float]:
    """Metric name -> value summed over its label sets, from Prometheus text format."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_and_labels, _, value = line.rpartition(" ")
        name = name_and_labels.split("{", 1)[0]
        try:
            values[name] = values.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return values


def _completion_body(
    model: str, prompt_ids: list[int], spec: SamplingSpec, index: int
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt_ids,
        "n": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,
        "return_tokens_as_token_ids": True,
        "temperature": spec.temperature,
        "top_p": spec.top_p,
        "min_p": spec.min_p,
        "max_tokens": spec.max_tokens,
        "min_tokens": spec.min_tokens,
        "stop": list(spec.stop),
        "stop_token_ids": list(spec.stop_token_ids),
        "include_stop_str_in_output": spec.include_stop_str_in_output,
        "ignore_eos": spec.ignore_eos,
        "presence_penalty": spec.presence_penalty,
        "frequency_penalty": spec.frequency_penalty,
        "skip_special_tokens": spec.skip_special_tokens,
    }
    if spec.top_k > 0:
        body["top_k"] = spec.top_k
    if spec.seed is not None:
        body["seed"] = spec.sample_seed(index)
    if spec.logprobs is not None:
        body["logprobs"] = spec.logprobs
    if spec.logprob_token_ids:
        body["logprobs"] = 0
        body["logprob_token_ids"] = list(spec.logprob_token_ids)
    return body


def _token_id(key: str) -> int:
    """`return_tokens_as_token_ids` writes tokens as "token_id:123"."""
    return int(key.rsplit(":", 1)[1])


def _apply_chunk(chunk: dict[str, Any], partial: _Partial, spec: SamplingSpec) -> None:
    top_k = spec.logprobs
    usage = chunk.get("usage")
    if usage:
        partial.prompt_tokens = int(usage.get("prompt_tokens") or partial.prompt_tokens)
        details = usage.get("prompt_tokens_details") or {}
        partial.cached_prompt_tokens = int(details.get("cached_tokens") or 0)
    for choice in chunk.get("choices") or []:
        partial.text.append(choice.get("text") or "")
        partial.token_ids.extend(choice.get("token_ids") or [])
        logprobs = choice.get("logprobs")
        if top_k is not None and logprobs:
            partial.token_logprobs.extend(
                lp if lp is not None else float("nan") for lp in logprobs["token_logprobs"]
            )
            since = len(partial.token_confidences)
            for position in logprobs.get("top_logprobs") or []:
                values = sorted((position or {}).values(), reverse=True)[:top_k]
                partial.token_entropies.append(topk_entropy(values) if top_k > 0 else 0.0)
                partial.token_confidences.append(topk_confidence(values))
            _watch_confidence(partial, spec, since)
        if spec.logprob_token_ids and logprobs:
            wanted = set(spec.logprob_token_ids)
            for position in logprobs.get("top_logprobs") or []:
                labels = {_token_id(k): v for k, v in (position or {}).items()}
                partial.label_logprobs.append({t: v for t, v in labels.items() if t in wanted})
        if choice.get("finish_reason"):
            partial.finish_reason = choice["finish_reason"]
            partial.stop_reason = choice.get("stop_reason")


def _watch_confidence(partial: _Partial, spec: SamplingSpec, since: int) -> None:
    """Mark the sample for stopping once a full window's confidence is below the bar."""
    stop = spec.confidence_stop
    if stop is None or partial.low_confidence or partial.finish_reason:
        return
    if first_low_window(partial.token_confidences, since, stop) is not None:
        partial.low_confidence = True


def _to_sample(index: int, partial: _Partial, *, aborted: bool) -> Sample:
    finish = partial.finish_reason
    if aborted or finish not in ("stop", "length"):
        finish = "abort"
    # a sample that finished in the chunk that crossed the bar keeps its own reason
    low = partial.low_confidence and finish == "abort"
    stop_reason = LOW_CONFIDENCE if low else partial.stop_reason
    has_logprobs = bool(partial.token_logprobs)
    return Sample(
        index=index,
        text="".join(partial.text),
        token_ids=list(partial.token_ids),
        finish_reason=finish,
        stop_reason=stop_reason,
        prompt_tokens=partial.prompt_tokens,
        cached_prompt_tokens=partial.cached_prompt_tokens,
        token_logprobs=list(partial.token_logprobs) if has_logprobs else None,
        token_entropies=list(partial.token_entropies) if has_logprobs else None,
        token_confidences=list(partial.token_confidences) if has_logprobs else None,
        label_logprobs=list(partial.label_logprobs) if partial.label_logprobs else None,
    )
