"""OpenAI-style error bodies, and the handlers that make every failure one.

Clients of the official `openai` package turn these into typed exceptions
(`BadRequestError`, `AuthenticationError`, ...), so the shape matters as much as the code.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ttscale.engine.protocol import EngineError, EngineRejected
from ttscale.strategies.errors import ModelNotFound, Namer, RequestError

from .schemas import api_field_name
from .vllm_fields import NOT_SERVED, NOT_YET_SERVED

logger = logging.getLogger(__name__)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    499: "client_closed_request",
    503: "service_unavailable",
}


class APIError(Exception):
    """An error to report to the client as-is."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict:
    """The OpenAI error object, typed by status: the one shape every error has."""
    error_type = _ERROR_TYPES.get(status, "server_error")
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = error_body(status, message, param=param, code=code)
    return JSONResponse(body, status_code=status, headers=headers)


async def send_error(
    send: Send,
    status: int,
    message: str,
    *,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """An error response written straight to ASGI, for middlewares that answer before
    the app (body limit, admission, API keys)."""
    body = json.dumps(error_body(status, message, code=code)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


_TYPE_MISMATCHES = {"string_type", "list_type", "int_type", "float_type", "bool_type",
                    "dict_type", "model_type", "model_attributes_type"}  # fmt: skip
"""Errors a union's other branches report (`prompt` is a string *or* a token list): the
branch that matched the value's type has the error worth reporting."""


def _field(loc: tuple) -> str:
    """Dotted field name, without pydantic's union-branch tags like `list[int]`."""
    parts = [str(p) for p in loc if p != "body" and not (isinstance(p, str) and "[" in p)]
    return ".".join(parts)


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    """The most telling validation problem as a sentence and the dotted field it concerns."""
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = next((e for e in errors if e.get("type") not in _TYPE_MISMATCHES), errors[0])
    if first.get("type") == "json_invalid":
        return "request body is not valid JSON", None
    param = _field(first.get("loc", ())) or None
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        message = NOT_SERVED.get(param or "", "unsupported parameter")
        if param in NOT_YET_SERVED:
            message = "not served yet (vLLM has it; see the vLLM compatibility page)"
    if param:
        message = f"{param}: {message}"
    telling = [e for e in errors if e.get("type") not in _TYPE_MISMATCHES] or errors
    others = {_field(e.get("loc", ())) for e in telling} - {param or ""}
    if others:
        message += f" (and {len(others)} more problem{'s' if len(others) > 1 else ''})"
    return message, param


def api_error(exc: RequestError, name: Namer = api_field_name) -> APIError:
    """A domain error of the service entry as the API reports it: 404 for a model not
    served, else 400, with every field the error names renamed to the request's own."""
    message, param = exc.named(name)
    status = 404 if isinstance(exc, ModelNotFound) else 400
    return APIError(status, message, param=param, code=exc.code)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(
            exc.status, exc.message, param=exc.param, code=exc.code, headers=exc.headers
        )

    @app.exception_handler(EngineError)
    async def _engine_error(request: Request, exc: EngineError) -> JSONResponse:
        request_id = getattr(request.state, "request_id", "?")
        logger.error("request=%s: an engine failed: %s", request_id, exc)
        return error_response(
            503,
            f"a model this request needs is unavailable; retry later (request {request_id})",
            code="engine_unavailable",
        )

    @app.exception_handler(EngineRejected)
    async def _engine_rejected(_: Request, exc: EngineRejected) -> JSONResponse:
        return error_response(400, str(exc), param=exc.param)

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
        error = api_error(exc)
        return error_response(error.status, error.message, param=error.param, code=error.code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _describe_validation(exc)
        return error_response(400, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return error_response(exc.status_code, message, headers=exc.headers)


class UnexpectedErrorMiddleware:
    """The last net, innermost: a bug becomes an OpenAI-style 500 that still passes
    through the request-id and metrics middlewares (Starlette's own 500 handler sits
    outside every middleware), and the details go to the log with the request id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            request_id = scope.get("state", {}).get("request_id", "?")
            logger.exception("request=%s: unhandled error on %s", request_id, scope.get("path"))
            if started or scope["type"] != "http":
                raise
            message = f"internal error: {type(exc).__name__} (request {request_id})"
            await send_error(send, 500, message)
