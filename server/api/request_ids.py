"""Request ids as a pure ASGI middleware.

Each request gets the client's `x-request-id` or a new one, available as
`request.state.request_id` and echoed in the response headers. A pure ASGI middleware
(not Starlette's BaseHTTPMiddleware) leaves the `receive` channel untouched, so
handlers can still notice a client that disconnects.
"""

from __future__ import annotations

import re

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ttscale.engine.protocol import new_request_id

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _acceptable(given: str | None) -> str | None:
    """A client's id is kept only if it is short and plain: it goes into logs and the
    ids of engine requests, where control characters or megabytes do harm."""
    return given if given is not None and _REQUEST_ID.fullmatch(given) else None


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _acceptable(Headers(scope=scope).get("x-request-id")) or new_request_id("req")
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["x-request-id"] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)
