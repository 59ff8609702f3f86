"""Admission and accounting at the HTTP edge, as one pure ASGI middleware.

- Every response is counted by route and status (`ttscale_http_responses`).
- At most `max_in_flight` completion requests are served at once; the next ones get an
  immediate 429 with `Retry-After`, so overload degrades cleanly instead of queueing
  without bound (streams count until they end).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..metrics import Metrics
from .errors import send_error

COMPLETIONS = ("/v1/chat/completions", "/v1/completions")
ROUTES = (*COMPLETIONS, "/v1/models", "/v1/strategies", "/v1/verifiers", "/health", "/metrics")
RETRY_AFTER_S = 1


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, max_in_flight: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in ROUTES else "other"

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.response(route, message["status"])
            await send(message)

        if route not in COMPLETIONS:
            await self.app(scope, receive, counting_send)
            return
        if self.in_flight >= self.max_in_flight:
            self.metrics.rejected.inc()
            await _too_many(counting_send, self.max_in_flight)
            return
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.set(self.in_flight)


async def _too_many(send: Send, limit: int) -> None:
    message = f"more than {limit} completion requests in flight; retry shortly"
    await send_error(
        send, 429, message, code="server_busy", headers={"Retry-After": str(RETRY_AFTER_S)}
    )
