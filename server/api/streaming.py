"""Server-sent events in the OpenAI chunk format, with strategy progress.

A streamed strategy run sends: a first chunk with the assistant role; one chunk per
progress event (a sample finished, the vote changed, a search step was scored), whose
delta is empty and whose `ttscale` field holds the event; the chosen answer as a content
chunk; a final chunk with the finish reason and the full evidence (and `usage` when
`stream_options.include_usage` is set); then `data: [DONE]`. A client that ignores the
`ttscale` field sees an ordinary, valid stream.

If the client goes away, the response generator is cancelled, which cancels the
strategy run and aborts its samples.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from ttscale.engine.protocol import EngineRejected
from ttscale.strategies.base import ProgressCallback
from ttscale.strategies.service import ServiceResult

from .logprobs import logprobs_of
from .responses import ResponseToolCall, Usage
from .shown import PLAIN, Shown

logger = logging.getLogger("ttscale.server")

_FINISHED = object()


class ChunkWriter:
    """Formats chunks of one completion (shared id, creation time and model); `kind`
    "text" writes `/v1/completions` chunks (`text` instead of a `delta`)."""

    def __init__(self, model: str, kind: str = "chat", shown: Shown = PLAIN) -> None:
        self.kind = kind
        self.shown = shown
        self.id = shown.response_id(kind)
        self.created = int(time.time())
        self.model = model
        self.object = "chat.completion.chunk" if kind == "chat" else "text_completion"

    def chunk(
        self,
        delta: dict[str, Any],
        *,
        index: int = 0,
        finish_reason: str | None = None,
        ttscale: dict[str, Any] | None = None,
        logprobs: BaseModel | None = None,
        token_ids: list[int] | None = None,
        top: dict[str, Any] | None = None,
    ) -> str:
        shown = logprobs.model_dump() if logprobs is not None else None
        if self.kind == "chat":
            choice = {"index": index, "delta": delta, "finish_reason": finish_reason}
            if shown is not None:
                choice["logprobs"] = shown
        else:
            choice = {
                "index": index,
                "text": delta.get("content", ""),
                "finish_reason": finish_reason,
                "logprobs": shown,
            }
        if token_ids is not None:
            choice["token_ids"] = token_ids
        body: dict[str, Any] = {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
        if ttscale is not None:
            body["ttscale"] = ttscale
        body.update(top or {})
        return f"data: {json.dumps(body)}\n\n"

    def first_chunk(self) -> str:
        """The opening chunk: the assistant's role (and the rendered prompt, where asked,
        on this chunk only, as vLLM sends it)."""
        extra = {"prompt_text": self.shown.rendered_prompt} if self.shown.rendered_prompt else None
        return self.chunk({"role": "assistant", "content": ""}, top=extra)

    def usage(self, usage: dict[str, Any]) -> str:
        """The usage chunk `stream_options.include_usage` asks for: no choices."""
        body = {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        }
        return f"data: {json.dumps(body)}\n\n"

    @staticmethod
    def done() -> str:
        return "data: [DONE]\n\n"

    @staticmethod
    def error(message: str, *, invalid: bool = False, param: str | None = None) -> str:
        """An error event: the request's fault (`invalid`, naming its `param`) or the
        server's."""
        kind = "invalid_request_error" if invalid else "server_error"
        body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
        return f"data: {json.dumps(body)}\n\n"


HEARTBEAT_S = 1.0
"""Idle streams send an SSE comment this often: writing to a closed connection is how a
disconnect is noticed while a long sample is still running."""


class _ClosingStreamingResponse(StreamingResponse):
    """Closes the event generator as soon as sending fails (client gone), so its
    `finally` cancels the strategy run now rather than whenever it is collected."""

    async def stream_response(self, send) -> None:
        try:
            await super().stream_response(send)
        finally:
            await self.body_iterator.aclose()


def sse(events: AsyncIterator[str]) -> StreamingResponse:
    return _ClosingStreamingResponse(
        events, media_type="text/event-stream", headers={"cache-control": "no-cache"}
    )


async def completion_events(
    writer: ChunkWriter,
    run: Callable[[ProgressCallback], Awaitable[ServiceResult]],
    *,
    progress: bool,
    include_usage: bool,
    on_cancel: Callable[[], None] | None = None,
) -> AsyncIterator[str]:
    """Run `run(progress_callback)` and stream its progress events, then its choices.

    Each choice ends with a chunk holding its finish reason and, for a strategy run, the
    `ttscale` evidence; `on_cancel()` is called once a run the client abandoned stopped.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def on_progress(event: dict[str, Any]) -> None:
        if progress:
            await queue.put(event)

    task = asyncio.create_task(run(on_progress))
    task.add_done_callback(lambda _: queue.put_nowait(_FINISHED))
    try:
        yield writer.first_chunk()
        async for event in _events_until_finished(queue, writer):
            yield event
        try:
            result = task.result()
        except EngineRejected as exc:  # vLLM refused the request once it had started
            yield writer.error(str(exc), invalid=True, param=exc.param)
            yield writer.done()
            return
        except Exception:
            logger.exception("streamed run failed")
            yield writer.error("the run failed; see the server log")
            yield writer.done()
            return
        for part in _result_chunks(writer, result, include_usage):
            yield part
    finally:
        if not task.done():  # the client went away: stop the run, abort its samples
            task.cancel()
            logger.info("streamed request cancelled by the client")
            # The server cancels this generator again at every await (anyio cancel
            # scope); shielded, the run's abort completes even so.
            waited = asyncio.gather(task, return_exceptions=True)
            if on_cancel is not None:
                waited.add_done_callback(lambda _: on_cancel())
            await asyncio.shield(waited)


async def _events_until_finished(
    queue: asyncio.Queue[Any], writer: ChunkWriter
) -> AsyncIterator[str]:
    """Progress chunks as they come, keep-alive comments while nothing comes."""
    while True:
        try:
            item = await asyncio.wait_for(queue.get(), timeout=HEARTBEAT_S)
        except TimeoutError:
            yield ": keep-alive\n\n"
            continue
        if item is _FINISHED:
            return
        yield writer.chunk({}, ttscale=item)


def _result_chunks(writer: ChunkWriter, result: ServiceResult, include_usage: bool) -> list[str]:
    chunks: list[str] = []
    for choice in result.choices:
        if choice.index:
            chunks.append(writer.chunk({"role": "assistant", "content": ""}, index=choice.index))
        shown = writer.shown
        thought = choice.reasoning if shown.thinking.shown else None
        if thought:  # vLLM's name for it, and the one older clients read
            delta = {"reasoning": thought, "reasoning_content": thought}
            chunks.append(writer.chunk(delta, index=choice.index))
        chat = writer.kind == "chat"
        text = (shown.content_of(choice.answer_text) or "") if chat else shown.text_of(choice)
        positions = choice.logprobs if chat else shown.positions_of(choice)
        logprobs = logprobs_of(writer.kind, positions, shown.logprobs)
        token_ids = shown.token_ids_of(choice)
        delta: dict[str, Any] = {"content": text}
        calls = shown.tool_calls_of(choice) if chat else None
        if calls:  # whole, in the delta of the text before them
            delta["tool_calls"] = [
                {"index": i, **ResponseToolCall.of(call).model_dump()}
                for i, call in enumerate(calls)
            ]
        if text or calls or logprobs is not None or token_ids is not None:
            chunks.append(
                writer.chunk(delta, index=choice.index, logprobs=logprobs, token_ids=token_ids)
            )
        chunks.append(
            writer.chunk(
                {},
                index=choice.index,
                finish_reason=shown.finish_reason_of(choice) if chat else choice.finish_reason,
                ttscale=result.evidence,
            )
        )
    if include_usage:
        usage = Usage.of(result.usage, reasoning=writer.shown.thinking.counted)
        chunks.append(writer.usage(usage.model_dump()))
    chunks.append(writer.done())
    return chunks
