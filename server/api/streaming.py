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
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from strategies.base import StrategyResult

logger = logging.getLogger("ttscale.server")

_FINISHED = object()


class ChunkWriter:
    """Formats chunks of one completion (shared id, creation time and model); `kind`
    "text" writes `/v1/completions` chunks (`text` instead of a `delta`)."""

    def __init__(self, model: str, kind: str = "chat") -> None:
        self.kind = kind
        self.id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
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
    ) -> str:
        if self.kind == "chat":
            choice = {"index": index, "delta": delta, "finish_reason": finish_reason}
        else:
            choice = {
                "index": index,
                "text": delta.get("content", ""),
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        body: dict[str, Any] = {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
        if ttscale is not None:
            body["ttscale"] = ttscale
        return f"data: {json.dumps(body)}\n\n"

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
    def error(message: str) -> str:
        return f"data: {json.dumps({'error': {'message': message, 'type': 'server_error'}})}\n\n"


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


async def strategy_events(
    writer: ChunkWriter,
    run: Callable[[Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[StrategyResult]],
    finish: Callable[[StrategyResult], tuple[dict[str, Any], dict[str, Any] | None]],
    *,
    progress: bool,
    on_cancel: Callable[[], None] | None = None,
) -> AsyncIterator[str]:
    """Run `run(progress_callback)` and stream its events, answer and evidence.

    `finish(result)` gives the final chunk's `ttscale` evidence and `usage` (or None);
    `on_cancel()` is called once a run the client abandoned has stopped.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def on_progress(event: dict[str, Any]) -> None:
        if progress:
            await queue.put(event)

    task = asyncio.create_task(run(on_progress))
    task.add_done_callback(lambda _: queue.put_nowait(_FINISHED))
    try:
        yield writer.chunk({"role": "assistant", "content": ""})
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), timeout=HEARTBEAT_S)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if item is _FINISHED:
                break
            yield writer.chunk({}, ttscale=item)
        try:
            result = task.result()
        except Exception as exc:
            logger.exception("streamed strategy run failed")
            yield writer.error(f"{type(exc).__name__}: {exc}")
            yield writer.done()
            return
        evidence, usage = finish(result)
        if result.text:
            yield writer.chunk({"content": result.text})
        yield writer.chunk({}, finish_reason="stop" if result.text else "length", ttscale=evidence)
        if usage is not None:
            yield writer.usage(usage)
        yield writer.done()
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
