"""API keys, checked before anything else is spent on a request.

A pure ASGI middleware in front of admission and body parsing: a client without a key
cannot take an admission slot or make the server read its body. Keys are compared in
constant time, every one of them, so the reply's timing says nothing about the keys.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import send_error

GUARDED_PREFIX = "/v1/"


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: list[str]) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = scope["type"] == "http" and scope.get("path", "").startswith(GUARDED_PREFIX)
        if not self.keys or not guarded or self._authorized(Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        await send_error(
            send,
            401,
            "invalid or missing API key",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )

    def _authorized(self, headers: Headers) -> bool:
        scheme, _, key = headers.get("authorization", "").partition(" ")
        matches = [hmac.compare_digest(key.encode(), known) for known in self.keys]
        return scheme.lower() == "bearer" and any(matches)
