"""Adapter to an OpenAI-compatible vLLM server over HTTP, or to vllm-router in front of
several.

Same protocol as the in-process engine, so strategies run unchanged against remote
replicas. Prompts travel as token ids (`/v1/completions` accepts a list of ints) so the
replica never re-tokenises and its prefix cache sees exactly the ids we continue from.
Every sample is streamed (in chunks, see `CHUNK_TOKENS`): that is how an aborted sample
still reports the tokens it generated, and closing the stream is how vLLM (through the
router too) is told to stop.

Scale-out is the router's job, not this adapter's: it talks to one URL. Each sample
carries a routing key (`X-Session-ID`, see `routing_keys.py`) so that a `consistent_hash`
router keeps prompts that share a prefix on one replica, and a sample whose replica dies
is started again through the router (`failover.py`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from .confidence import LOW_CONFIDENCE, first_low_window, topk_confidence
from .failover import Failover, TransientError, is_transient_status
from .http_client import HTTP_ERRORS, REPLY_ERRORS, auth_headers, unusable
from .local_tokenizer import LocalChatTemplate, load_tokenizer, truncation_side_of
from .position_stats import topk_stats
from .protocol import (
    EngineError,
    EngineRejected,
    EngineSlow,
    EngineUnavailable,
    Generation,
    new_request_id,
    sample_request_id,
)
from .reasoning import ReasoningSplitter, check_parser_name
from .routing_keys import PrefixKeys
from .tool_calls import ToolCallReader, tool_constraint
from .types import (
    DEFAULT_RENDERING,
    FINISH_REASONS,
    EngineInfo,
    EngineStats,
    ModelShape,
    Position,
    PromptRendering,
    Sample,
    SamplingSpec,
    TokenLogprob,
)

logger = logging.getLogger(__name__)

ROUTING_HEADER = "X-Session-ID"
"""The header vllm-router's consistent_hash policy hashes first. Seen in vllm-router
0.1.17: it also hashes `X-Request-ID` and `X-User-ID` when no session header is sent, and
without any of them a token-id prompt is keyed by its length."""

ONE_URL = (
    "the remote engine talks to one URL: a vLLM server, or a vllm-router in front of "
    "several replicas (docs: Scale-out)"
)


@dataclass
class _Partial:
    """What one streamed sample has produced so far."""

    text: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    top_rows: list[list[float]] = field(default_factory=list)
    """Each position's top-k log-probabilities, reduced when the sample ends."""
    token_confidences: list[float] = field(default_factory=list)
    """Under a confidence watch, as the positions arrive."""
    label_logprobs: list[dict[int, float]] = field(default_factory=list)
    position_logprobs: list[Position] = field(default_factory=list)
    prompt_logprobs: list[Position] | None = None
    low_confidence: bool = False
    """Its window confidence fell below `SamplingSpec.confidence_stop`: stop reading."""
    thought_closed_at: int | None = None
    """Tokens generated when a reasoning model's thought closed: the watch ends there."""
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0


@dataclass
class _Slot:
    """The partial work of a sample's current attempt (a retry starts a fresh one)."""

    partial: _Partial


class RemoteVLLMEngine:
    """`Engine` backed by one vLLM OpenAI-compatible server or a vllm-router."""

    def __init__(
        self,
        base_urls: Sequence[str],
        info: EngineInfo,
        *,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        stall_timeout_s: float = 120.0,
        failover: Failover | None = None,
        routing_keys: bool = True,
        reasoning: ReasoningSplitter | None = None,
        tools: ToolCallReader | None = None,
    ) -> None:
        """`stall_timeout_s`: a stream that sends nothing for this long (a replica that
        hangs without closing its connections) counts as broken and is retried.
        `routing_keys=False` sends no routing key (to measure what the key is worth)."""
        if len(base_urls) != 1:
            raise ValueError(f"{ONE_URL}; got {len(base_urls)} URLs")
        self._base_url = base_urls[0].rstrip("/")
        self._info = info
        self._failover = failover or Failover()
        self._keys = PrefixKeys() if routing_keys else None
        self._in_flight = 0
        self._chat_template: LocalChatTemplate | None = None
        self._is_router: bool | None = None
        self._reasoning = reasoning
        self._tools = tools
        self._healthy_workers: int | None = None
        self._headers = auth_headers(api_key)
        # no limit on a whole request (a long sample streams for as long as it takes);
        # `connect` bounds the wait for a free connection, `sock_read` a silent stream
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout_s, sock_connect=10.0, sock_read=stall_timeout_s
        )
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        """The connection pool, made on first use (aiohttp wants a running loop).

        aiohttp rather than httpx for this adapter: every sample is its own streamed
        request, and the front's CPU per sample competes with the engine; aiohttp reads
        a streamed completion for a fraction of httpx's CPU
        (lab/studies/http-client-cpu.md).
        """
        if self._session is None:
            # tracing costs every request a few awaits: only when its log line is wanted
            traced = logger.isEnabledFor(logging.DEBUG)
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=1024),
                trace_configs=[_connection_log(self._base_url)] if traced else None,
                read_bufsize=2**20,  # an SSE line of 16 tokens' top-20 logprobs fits
            )
        return self._session

    @classmethod
    async def connect(
        cls,
        base_urls: Sequence[str],
        *,
        api_key: str | None = None,
        shape: ModelShape | None = None,
        model_path: str | None = None,
        reasoning_parser: str | None = None,
        tool_call_parser: str | None = None,
        auto_tool_choice: bool = False,
    ) -> RemoteVLLMEngine:
        """Ask the first replica what it serves; fail clearly if it cannot be reached.
        With `reasoning_parser`, this front splits thinking from answers with the model's
        tokenizer (`model_path`), and the server must take thinking budgets (run its own
        `--reasoning-parser`). With `tool_call_parser`, this front constrains samples
        drawn with tools and reads their calls (the server needs no parser of its own)."""
        base = base_urls[0].rstrip("/")
        reasoning = tools = None
        if reasoning_parser is not None or tool_call_parser is not None:
            tokenizer = await _front_tokenizer(model_path)
            if reasoning_parser is not None:
                check_parser_name(reasoning_parser)
                reasoning = ReasoningSplitter(reasoning_parser, tokenizer)
            if tool_call_parser is not None:
                tools = ToolCallReader(
                    tool_call_parser, tokenizer, auto_tool_choice=auto_tool_choice
                )
        session = aiohttp.ClientSession(
            headers=auth_headers(api_key), timeout=aiohttp.ClientTimeout(total=10.0)
        )
        try:
            async with session, session.get(f"{base}/v1/models") as response:
                response.raise_for_status()
                model = (await response.json(content_type=None))["data"][0]
                max_token_id = await cls._vocabulary_bound(session, base, model["id"])
                if reasoning is not None and reasoning.takes_budgets:
                    await _check_thinking_budgets(session, base, model["id"])
        except (*HTTP_ERRORS, *REPLY_ERRORS) as exc:
            raise EngineUnavailable(unusable(f"vLLM server {base}", exc)) from exc
        info = EngineInfo(
            model_name=model["id"],
            max_model_len=int(model.get("max_model_len") or 4096),
            backend="vllm-remote",
            model_path=model_path,
            shape=shape,
            max_token_id=max_token_id,
            reasoning_parser=reasoning_parser,
            thinking_budgets=reasoning is not None and reasoning.takes_budgets,
            thought_closes=reasoning.end_token_ids if reasoning is not None else (),
            tool_call_parser=tool_call_parser,
            auto_tool_choice=auto_tool_choice and tools is not None,
            truncation_side=truncation_side_of(Path(model_path)) if model_path else "right",
        )
        engine = cls(base_urls, info, api_key=api_key, reasoning=reasoning, tools=tools)
        if model_path is not None:
            engine._chat_template = await LocalChatTemplate.matching(
                model_path, engine._render_on_server
            )
        return engine

    @staticmethod
    async def _vocabulary_bound(
        session: aiohttp.ClientSession, base: str, model: str
    ) -> int | None:
        """The largest token id the server takes in a prompt, so that requests with
        others are refused with a 400 before they reach it. vLLM publishes no
        vocabulary size, but refuses a prompt holding an id beyond it with a 400
        ("Token id N is out of vocabulary") before any work: so ask it, with one-token
        completions of a one-id prompt, doubling and then bisecting (about 25 requests,
        once). None when the server answers otherwise (no check here, as before)."""

        async def accepts(token_id: int) -> bool:
            body = {"model": model, "prompt": [token_id], "max_tokens": 1, "temperature": 0}
            async with session.post(f"{base}/v1/completions", json=body) as reply:
                if reply.status == 400 and "out of vocabulary" in await reply.text():
                    return False
                reply.raise_for_status()
                return True

        try:
            low, high = 0, 1024  # low is accepted; high is not, once the doubling stops
            if not await accepts(low):
                return None
            while await accepts(high):
                low, high = high, high * 2
                if high > 2**31:
                    return None
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if await accepts(middle) else (low, middle)
        except HTTP_ERRORS as exc:
            logger.warning("cannot learn the vocabulary of %s (%s): token ids unchecked", base, exc)
            return None
        return low

    @property
    def info(self) -> EngineInfo:
        return self._info

    async def render_chat(
        self, messages: Sequence[dict[str, Any]], rendering: PromptRendering = DEFAULT_RENDERING
    ) -> list[int]:
        if self._chat_template is not None:
            return await self._chat_template.render(messages, rendering)
        return await self._render_on_server(messages, rendering)

    async def _render_on_server(
        self, messages: Sequence[dict[str, Any]], rendering: PromptRendering = DEFAULT_RENDERING
    ) -> list[int]:
        body = {
            "model": self._info.model_name,
            "messages": list(messages),
            **rendering.model_dump(exclude_none=True),
        }
        return (await self._post_json("/tokenize", body))["tokens"]

    async def check(self, spec: SamplingSpec) -> None:
        """Nothing to check in advance: the server's own checks answer each sample, and
        its 400 comes back as `EngineRejected` (after the headers of a stream). Tool
        calling needs this front's parser."""
        tool_constraint(self._tools, spec)

    async def tokenize(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        body = {
            "model": self._info.model_name,
            "prompt": text,
            "add_special_tokens": add_special_tokens,
        }
        return (await self._post_json("/tokenize", body))["tokens"]

    async def detokenize(self, token_ids: Sequence[int]) -> str:
        body = {"model": self._info.model_name, "tokens": list(token_ids)}
        return (await self._post_json("/detokenize", body))["prompt"]

    async def _post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self._base_url}{path}"

        async def attempt(_: int) -> dict[str, Any]:
            logger.debug("POST %s", path)
            try:
                async with self._http().post(url, json=body) as response:
                    if response.status != 200:
                        detail = (await response.read()).decode(errors="replace")[:2000]
                        raise _status_error(url, response.status, detail)
                    return await response.json(content_type=None)
            except HTTP_ERRORS as exc:
                raise TransientError(f"{url}: {exc!r}") from exc

        return await self._failover.run(attempt, f"POST {path}")

    def generate(
        self,
        prompt_token_ids: Sequence[int],
        spec: SamplingSpec,
        n: int = 1,
        request_id: str | None = None,
    ) -> Generation:
        request_id = request_id or new_request_id()
        prompt_ids = list(prompt_token_ids)
        # One key for every sample of the call (and for later calls that extend this
        # prompt), so a consistent-hash router keeps them on one replica's prefix cache.
        key = self._keys.key(prompt_ids) if self._keys is not None else None
        stop_events = [asyncio.Event() for _ in range(n)]
        calling = spec.tool_calling
        spec = tool_constraint(self._tools, spec)

        async def run_sample(index: int) -> Sample:
            sample = await draw(index)
            if self._reasoning is not None:
                await self._reasoning.apply(sample, prompt_ids)
            if calling is not None and self._tools is not None:
                self._tools.read(sample, calling)
            return sample

        async def draw(index: int) -> Sample:
            if stop_events[index].is_set():  # aborted before it started: nothing spent
                return _to_sample(index, _Partial(), aborted=True)
            slot = _Slot(_Partial(prompt_tokens=len(prompt_ids)))
            self._in_flight += 1
            stream = asyncio.create_task(
                self._sample_with_failover(prompt_ids, spec, index, request_id, key, slot)
            )
            stopper = asyncio.create_task(stop_events[index].wait())
            try:
                await asyncio.wait({stream, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._in_flight -= 1
                stopper.cancel()
            if not stream.done():
                stream.cancel()  # closes the HTTP stream: vLLM aborts the request
                await asyncio.wait({stream})
                return _to_sample(index, slot.partial, aborted=True)
            stream.result()  # re-raise what failover gave up on
            return _to_sample(index, slot.partial, aborted=False)

        async def abort_samples(indices: Sequence[int]) -> None:
            for index in indices:
                stop_events[index].set()

        return Generation(request_id, len(prompt_ids), n, run_sample, abort_samples)

    async def _sample_with_failover(
        self,
        prompt_ids: list[int],
        spec: SamplingSpec,
        index: int,
        request_id: str,
        key: str | None,
        slot: _Slot,
    ) -> None:
        """Stream one sample; if its replica goes away, start it again from the prompt.

        The tokens of a broken attempt are dropped (the retry regenerates them; with a
        seed, identically), so they are not billed: they were never delivered.
        """
        sample_id = sample_request_id(request_id, index)
        # No X-Request-ID header: vllm-router would hash it as a session key and scatter
        # the samples (the id travels in the body, for vLLM).
        headers = {ROUTING_HEADER: key} if key is not None else {}

        async def attempt(number: int) -> None:
            slot.partial = _Partial(prompt_tokens=len(prompt_ids))
            attempt_id = sample_id if number == 0 else f"{sample_id}.retry{number}"
            await self._run_sample(prompt_ids, spec, index, attempt_id, headers, slot.partial)

        await self._failover.run(attempt, f"sample {sample_id}")

    async def _run_sample(
        self,
        prompt_ids: list[int],
        spec: SamplingSpec,
        index: int,
        sample_id: str,
        headers: dict[str, str],
        partial: _Partial,
    ) -> None:
        """One sample, streamed; or, for the prompt's log-probabilities (which vLLM's
        server does not stream), as a whole response. Either way, leaving the response
        unread closes it, and vLLM aborts the request."""
        body = _completion_body(self._info.model_name, prompt_ids, spec, index)
        body["request_id"] = sample_id
        url = f"{self._base_url}/v1/completions"
        try:
            async with self._http().post(url, json=body, headers=headers) as response:
                if response.status != 200:
                    detail = (await response.read()).decode(errors="replace")[:2000]
                    raise _status_error(url, response.status, detail)
                if body["stream"]:
                    logger.debug("sample %s: streaming from %s", sample_id, url)
                    await self._read_stream(response, spec, partial)
                    return
                reply = await response.json(content_type=None)
        except HTTP_ERRORS as exc:  # the replica (or the router) went away mid-response
            raise TransientError(f"{url}: {exc!r}") from exc
        _apply_chunk(reply, partial, spec, self._thought_closes)
        first = await self.detokenize(prompt_ids[:1])
        reported = (reply.get("choices") or [{}])[0].get("prompt_logprobs") or []
        partial.prompt_logprobs = _prompt_positions(first, prompt_ids, reported)

    async def _read_stream(
        self, response: aiohttp.ClientResponse, spec: SamplingSpec, partial: _Partial
    ) -> None:
        async for line in response.content:  # one SSE line at a time
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                # read on to the end of the body (just after): a response left unread
                # is closed, and its connection cannot be reused
                continue
            _apply_chunk(parse_event(payload), partial, spec, self._thought_closes)
            if partial.low_confidence:
                break  # leaving the body unread closes it: vLLM aborts the request

    @property
    def _thought_closes(self) -> tuple[int, ...]:
        return self._reasoning.end_token_ids if self._reasoning is not None else ()

    async def num_running(self) -> int:
        """Samples this process has in flight (other fronts may share the replicas)."""
        return self._in_flight

    async def stats(self) -> EngineStats:
        """The replicas' own Prometheus figures, summed (KV-cache use: averaged); behind
        a router, those of the workers it reports healthy."""
        scraped = [await self._scrape(url) for url in await self._replica_urls()]
        alive = [s for s in scraped if s is not None]
        total = EngineStats()
        for values in alive:
            total.running += int(values.get("vllm:num_requests_running", 0))
            total.waiting += int(values.get("vllm:num_requests_waiting", 0))
            total.kv_cache_usage += values.get("vllm:kv_cache_usage_perc", 0.0) / len(alive)
            total.prefix_cache_queries += int(values.get("vllm:prefix_cache_queries_total", 0))
            total.prefix_cache_hits += int(values.get("vllm:prefix_cache_hits_total", 0))
        return total

    async def _get(self, url: str) -> tuple[int, str]:
        """Status and body of a short GET (health, metrics, router state): 2 s at most."""
        async with self._http().get(url, timeout=PROBE_TIMEOUT) as response:
            return response.status, await response.text()

    async def _probe(self, url: str) -> tuple[int, str]:
        """`_get` for a health check: out of reach is `EngineUnavailable`, no answer in
        time `EngineSlow` (a loaded router or replica can be late without being dead)."""
        try:
            return await self._get(url)
        except TimeoutError as exc:  # before HTTP_ERRORS, which include it
            raise EngineSlow(f"{url}: no answer within {PROBE_TIMEOUT.total:g} s") from exc
        except HTTP_ERRORS as exc:
            raise EngineUnavailable(f"{url}: {exc!r}") from exc

    async def _scrape(self, base_url: str) -> dict[str, float] | None:
        try:
            status, text = await self._get(f"{base_url}/metrics")
        except HTTP_ERRORS:
            return None
        return parse_prometheus(text) if status == 200 else None

    async def check_health(self) -> None:
        """A vLLM server: its `/health`. A router: at least one worker it reports healthy.

        Not the router's own `/health`, which is a 503 as soon as any one worker is down:
        one lost replica must not take the front down with it.
        """
        view = await self._router_view()
        if view is None:
            await self._expect_ok(f"{self._base_url}/health")
            return
        healthy, total = view
        if healthy != self._healthy_workers:
            log = logger.info if healthy == total else logger.warning
            log("router %s: %d of %d vLLM workers healthy", self._base_url, healthy, total)
            self._healthy_workers = healthy
        if healthy == 0:
            raise EngineUnavailable(f"router {self._base_url}: none of {total} workers healthy")

    async def _expect_ok(self, url: str) -> None:
        status, _ = await self._probe(url)
        if status != 200:
            raise EngineUnavailable(f"{url}: HTTP {status}")

    async def _router_view(self) -> tuple[int, int] | None:
        """(healthy, total) workers from vllm-router's `/readiness`; None for a plain
        vLLM server (which has no such route). Learnt on the first answer."""
        if self._is_router is False:
            return None
        url = f"{self._base_url}/readiness"
        status, text = await self._probe(url)
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            body = {}
        if not isinstance(body, dict) or "healthy_workers" not in body:
            if self._is_router is None and status == 404:
                self._is_router = False
                return None
            detail = f"HTTP {status} {text.strip()[:200]}"
            raise EngineUnavailable(f"router not ready: {url}: {detail}")
        self._is_router = True
        return int(body["healthy_workers"]), int(body.get("total_workers") or 0)

    async def _replica_urls(self) -> list[str]:
        """The vLLM servers behind this engine: the router's healthy workers, or the one."""
        try:
            if await self._router_view() is None:
                return [self._base_url]
            _, text = await self._get(f"{self._base_url}/workers")
            workers = json.loads(text).get("workers", [])
        except (EngineError, *HTTP_ERRORS, ValueError):
            return []
        return [w["url"] for w in workers if w.get("is_healthy", True) and "url" in w]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


PROBE_TIMEOUT = aiohttp.ClientTimeout(total=2.0)


async def _front_tokenizer(model_path: str | None) -> Any:
    """The model's own tokenizer, which the front's reasoning and tool-call parsers
    (vLLM's) read."""
    if model_path is None:
        raise EngineUnavailable(
            "a reasoning or tool-call parser with a remote engine needs the model's "
            "directory (--model DIR): the parser reads its tokenizer"
        )
    return await asyncio.to_thread(load_tokenizer, Path(model_path))


async def _check_thinking_budgets(session: aiohttp.ClientSession, base: str, model: str) -> None:
    """A thinking budget needs the server's own reasoning parser: without it vLLM refuses
    every sample that has one, so say so at start-up rather than on the first request."""
    body = {"model": model, "prompt": [0], "max_tokens": 1, "thinking_token_budget": 1}
    async with session.post(f"{base}/v1/completions", json=body) as reply:
        if reply.status == 200:
            return
        detail = (await reply.text())[:300]
    raise EngineUnavailable(
        f"the vLLM server {base} refuses thinking budgets (HTTP {reply.status}: {detail}): "
        "start it with --reasoning-parser too"
    )


def _status_error(url: str, status: int, detail: str) -> Exception:
    """A non-200 answer: the request's own fault (400: `EngineRejected` with the server's
    message and field), or worth retrying elsewhere (overload, a replica restarting), or
    neither."""
    if status == HTTPStatus.BAD_REQUEST:
        return _rejection(detail)
    error = TransientError if is_transient_status(status) else EngineError
    return error(f"{url}: HTTP {status}: {detail}" if detail else f"{url}: HTTP {status}")


def _rejection(detail: str) -> EngineRejected:
    """vLLM's 400 body (an OpenAI error object) as the refusal it states."""
    try:
        error = json.loads(detail)["error"]
    except (ValueError, KeyError, TypeError):
        error = None
    if not isinstance(error, dict) or "message" not in error:
        return EngineRejected(detail or _REFUSED)
    return _refusal(error)


_REFUSED = "the model server refused the request"


def _refusal(error: dict[str, Any]) -> EngineRejected:
    """An OpenAI error object of vLLM's (in a 400 body or a stream) as the refusal."""
    return EngineRejected(str(error.get("message") or _REFUSED), error.get("param"))


def _connection_log(base_url: str) -> aiohttp.TraceConfig:
    """Log each new TCP connection at DEBUG: samples should reuse pooled connections,
    and a connection per sample (a body left unread, see `_read_stream`) shows here.
    Attached when the pool is made, so DEBUG must be on by the engine's first request."""

    async def opened(*_: Any) -> None:
        logger.debug("opened a connection to %s", base_url)

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(opened)
    return trace


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


CHUNK_TOKENS = 16
"""Tokens per streamed chunk of a sample nobody watches token by token (vLLM's
per-request `stream_interval`). One SSE event per token costs the vLLM server's API
process and this one a serialise and a parse per token, and that work competes with the
engine (lab/studies/remote-streaming-chunks.md). The price: a sample aborted mid-chunk
is billed the tokens that reached this front, up to 15 fewer than vLLM made.
A sample under a confidence watch still streams every token, so that it stops on time."""


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
        # unset fields are left out, as a client of vLLM's server leaves them, so that the
        # server applies the model's generation-config defaults (None is "not set" too)
        **{
            name: value
            for name, value in spec.engine_fields().items()
            if value is not None and name in spec.model_fields_set
        },
        "max_tokens": spec.max_tokens,  # always: vLLM's default length is not ours
        "seed": spec.sample_seed(index),
    }
    if spec.priority:
        body["priority"] = spec.priority
    if spec.cache_salt is not None:  # not sampling fields in vLLM: request fields there
        body["cache_salt"] = spec.cache_salt
    if spec.session_id is not None:
        body["session_id"] = spec.session_id
    if spec.logprob_token_ids:  # the server returns them as top logprobs: ask for none else
        body["logprobs"] = 0
    if spec.keep_logprobs:  # the client reads the tokens: as vLLM decodes them, not ids
        del body["return_tokens_as_token_ids"]
    if spec.prompt_logprobs is not None:  # vLLM scores prompts in whole responses only
        body["stream"] = False
        del body["stream_options"]
    elif spec.confidence_stop is None:
        body["stream_interval"] = CHUNK_TOKENS
    return body


def parse_event(payload: bytes) -> Any:
    """One SSE event's JSON. orjson reads a chunk of 16 tokens' top-20 logprobs several
    times faster than `json` (lab/studies/front-ceiling.md), and the stream is the
    remote front's largest cost per token; what orjson refuses and `json` takes (NaN,
    integers past 64 bits) is read by `json`, so nothing reads differently."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return json.loads(payload)


def _stream_error(error: Any) -> Exception:
    """An error event of vLLM's stream: the request's fault (a 4xx code) or the server's."""
    if not isinstance(error, dict):
        return EngineError(f"the model server's stream failed: {error!r}")
    code = error.get("code")
    if isinstance(code, int) and 400 <= code < 500:
        return _refusal(error)
    return EngineError(f"the model server's stream failed: {error.get('message') or _REFUSED}")


def _prompt_positions(
    first: str, prompt_ids: Sequence[int], reported: Sequence[dict[str, Any] | None]
) -> list[Position]:
    """The prompt log-probabilities of vLLM's response (`{token id: {logprob, rank,
    decoded_token}}` per position, None for the first), the first as its token alone."""
    opening = (TokenLogprob(first, None, prompt_ids[0]),)
    positions = [
        tuple(
            TokenLogprob(
                str(entry.get("decoded_token") or ""), entry["logprob"], int(key), entry.get("rank")
            )
            for key, entry in (position or {}).items()
        )
        for position in reported[1:]
    ]
    return [opening, *positions]


def _token_id(key: str) -> int:
    """`return_tokens_as_token_ids` writes tokens as "token_id:123"."""
    return int(key.rsplit(":", 1)[1])


def _apply_chunk(
    chunk: dict[str, Any], partial: _Partial, spec: SamplingSpec, thought_closes: Sequence[int]
) -> None:
    if "error" in chunk:  # vLLM refused the request after it had started the stream
        raise _stream_error(chunk["error"])
    top_k = spec.logprobs
    usage = chunk.get("usage")
    if usage:
        partial.prompt_tokens = int(usage.get("prompt_tokens") or partial.prompt_tokens)
        details = usage.get("prompt_tokens_details") or {}
        partial.cached_prompt_tokens = int(details.get("cached_tokens") or 0)
    for choice in chunk.get("choices") or []:
        partial.text.append(choice.get("text") or "")
        token_ids = choice.get("token_ids") or []
        if partial.thought_closed_at is None:
            closing = next((i for i, t in enumerate(token_ids) if t in thought_closes), None)
            if closing is not None:
                partial.thought_closed_at = len(partial.token_ids) + closing
        partial.token_ids.extend(token_ids)
        logprobs = choice.get("logprobs")
        if top_k is not None and logprobs:
            partial.token_logprobs.extend(
                lp if lp is not None else float("nan") for lp in logprobs["token_logprobs"]
            )
            since = len(partial.top_rows)
            for position in logprobs.get("top_logprobs") or []:
                values = (position or {}).values()  # k, or k + 1 with the sampled token
                top = sorted(values, reverse=True)[:top_k] if len(values) > top_k else values
                partial.top_rows.append(list(top))
            if spec.confidence_stop is not None:  # the watch reads them as they come
                partial.token_confidences.extend(map(topk_confidence, partial.top_rows[since:]))
                _watch_confidence(partial, spec, since)
        if spec.keep_logprobs and logprobs:
            partial.position_logprobs.extend(
                tuple(TokenLogprob(token, value) for token, value in (position or {}).items())
                for position in logprobs.get("top_logprobs") or []
            )
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
    watched = partial.token_confidences[: partial.thought_closed_at]  # a thought, if any
    if first_low_window(watched, since, stop) is not None:
        partial.low_confidence = True


def _to_sample(index: int, partial: _Partial, *, aborted: bool) -> Sample:
    finish = partial.finish_reason
    if aborted or finish not in FINISH_REASONS:
        finish = "abort"
    # a sample that finished in the chunk that crossed the bar keeps its own reason
    low = partial.low_confidence and finish == "abort"
    stop_reason = LOW_CONFIDENCE if low else partial.stop_reason
    has_logprobs = bool(partial.token_logprobs)
    entropies, confidences = topk_stats(partial.top_rows) if has_logprobs else ([], [])
    if partial.token_confidences:  # watched: the values the watch read
        confidences = partial.token_confidences
    return Sample(
        index=index,
        text="".join(partial.text),
        token_ids=list(partial.token_ids),
        finish_reason=finish,
        stop_reason=stop_reason,
        prompt_tokens=partial.prompt_tokens,
        cached_prompt_tokens=partial.cached_prompt_tokens,
        token_logprobs=list(partial.token_logprobs) if has_logprobs else None,
        token_entropies=entropies if has_logprobs else None,
        token_confidences=list(confidences) if has_logprobs else None,
        label_logprobs=list(partial.label_logprobs) if partial.label_logprobs else None,
        position_logprobs=list(partial.position_logprobs) if partial.position_logprobs else None,
        prompt_logprobs=partial.prompt_logprobs,
    )
