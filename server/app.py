"""FastAPI application: engine lifecycle and the HTTP routes.

The engine loads in the background after start-up so that `/health` can answer
"loading" (503) while vLLM starts, then "ok" (200). All per-process state lives on
`app.state.runtime`; nothing is global. The routes only parse, call the service entry
(`ttscale.strategies.service.Service`) and format.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ttscale.engine.factory import open_engine
from ttscale.engine.protocol import Engine, EngineError, EngineSlow
from ttscale.strategies.registry import Strategy, discover
from ttscale.strategies.service import Service

from .api.admission import AdmissionMiddleware
from .api.auth import ApiKeyMiddleware
from .api.body_limit import BodyLimitMiddleware
from .api.completions import Completions
from .api.errors import (
    APIError,
    UnexpectedErrorMiddleware,
    error_response,
    install_error_handlers,
)
from .api.openapi import openapi_description
from .api.request_ids import RequestIdMiddleware
from .api.responses import (
    API_ERRORS,
    COMPLETION_ERRORS,
    STREAM_CONTENT,
    ChatCompletionResponse,
    CompletionResponse,
    ModelCard,
    ModelList,
    StrategyCard,
    StrategyList,
    VerifierCard,
    VerifierList,
)
from .api.schemas import ChatCompletionRequest, CompletionRequest
from .browser import add_ui_routes
from .config import Settings
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .wiring import build_service, engine_config

logger = logging.getLogger("ttscale.server")

EngineOpener = Callable[[Settings], Awaitable[Engine]]


async def _open_engine(settings: Settings) -> Engine:
    return await open_engine(engine_config(settings))


@dataclass
class Runtime:
    """The one engine (and service around it) of this process, and its loading state."""

    settings: Settings
    service: Service | None = None
    strategies: dict[str, Strategy[Any]] = field(default_factory=discover)
    metrics: Metrics = field(default_factory=Metrics)
    failure: str | None = None
    """Why this process cannot serve: the engine did not start, or it died."""
    on_failure: Callable[[str], None] | None = None
    health_interval_s: float = 1.0
    health_failures_allowed: int = 2
    """Failed checks in a row that are tolerated (a replica restarting, one slow probe)."""
    health_timeouts_allowed: int = 10
    """Failed checks in a row that are tolerated while the latest got no answer in time:
    a router or replica too busy to answer within the probe's timeout is not dead, and
    a front that exited under load would restart into the same load."""

    def completions(self) -> Completions:
        if self.failure is not None:
            raise APIError(503, self.failure, code="engine_failed")
        if self.service is None:
            raise APIError(
                503, "the model is still loading; retry shortly", code="engine_not_ready"
            )
        return Completions(self.service, self.metrics)

    exit_grace_s: float = 5.0
    """After the engine dies, how long /health and requests keep answering 503 (so load
    balancers and clients see why) before the process exits."""

    def fail(self, message: str, exit_after_s: float = 0.0) -> None:
        """Stop serving: /health and every request answer 503 from now on, and the
        process is told to exit (non-zero) so that its supervisor restarts it."""
        self.failure = message
        logger.critical("%s", message)
        if self.on_failure is not None:
            asyncio.get_running_loop().call_later(exit_after_s, self.on_failure, message)

    async def load_and_watch(self, open_engine_fn: EngineOpener) -> None:
        """Load the engine, then watch it for as long as the process serves."""
        await self.load(open_engine_fn)
        failed = 0
        while self.service is not None and self.failure is None:
            await asyncio.sleep(self.health_interval_s)
            try:
                await self.service.engine.check_health()
                failed = 0
            except EngineError as exc:
                failed += 1
                logger.warning("engine health check failed (%d in a row): %s", failed, exc)
                if failed > self._failures_allowed(exc):
                    self.fail(f"engine died: {exc}", exit_after_s=self.exit_grace_s)
            except Exception:  # a bug in a check must not silently end the watch
                logger.exception("engine health check raised")

    def _failures_allowed(self, latest: EngineError) -> int:
        if isinstance(latest, EngineSlow):
            return self.health_timeouts_allowed
        return self.health_failures_allowed

    async def load(self, open_engine_fn: EngineOpener) -> None:
        started = time.perf_counter()
        try:
            self.service = await self._open_service(open_engine_fn)
        except Exception as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            self.fail(f"engine failed to start: {detail}")
            return
        info = self.service.engine.info
        logger.info(
            "engine ready: model=%s backend=%s dtype=%s max_model_len=%d load_s=%.1f",
            info.model_name,
            info.backend,
            info.dtype or "remote",
            info.max_model_len,
            time.perf_counter() - started,
        )

    async def _open_service(self, open_engine_fn: EngineOpener) -> Service:
        engine = await open_engine_fn(self.settings)
        try:
            return await build_service(self.settings, engine, self.strategies)
        except BaseException:
            await engine.close()
            raise

    async def close(self) -> None:
        service, self.service = self.service, None
        if service is not None:
            logger.info("stopping engine and verifiers")
            await service.close()


def create_app(
    settings: Settings,
    *,
    open_engine_fn: EngineOpener = _open_engine,
    on_engine_failure: Callable[[str], None] | None = None,
) -> FastAPI:
    runtime = Runtime(settings, on_failure=on_engine_failure)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader = asyncio.create_task(runtime.load_and_watch(open_engine_fn), name="engine-runtime")
        try:
            yield
        finally:
            await _stop(loader)
            await runtime.close()

    app = FastAPI(
        title="ttscale",
        version="0.1.0",
        description="Test-time-scaling inference server with an OpenAI-compatible API.",
        lifespan=lifespan,
        **_docs_urls(settings.docs),
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.add_middleware(UnexpectedErrorMiddleware)  # innermost: its 500s pass the others
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        AdmissionMiddleware, metrics=runtime.metrics, max_in_flight=settings.max_in_flight
    )
    app.add_middleware(ApiKeyMiddleware, keys=settings.api_keys)
    app.add_middleware(RequestIdMiddleware)
    _add_open_routes(app, runtime)
    _add_api_routes(app, runtime)
    if settings.ui:
        add_ui_routes(app)
    app.openapi = partial(openapi_description, app)  # type: ignore[method-assign]
    return app


async def _stop(loader: asyncio.Task) -> None:
    """Stop the engine runtime task and wait for it: a load in progress cannot be
    interrupted, so this waits until it returns and the new engine is closed (no vLLM
    process may outlive the server)."""
    if loader.done():
        return
    loader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await loader


def _docs_urls(enabled: bool) -> dict[str, str | None]:
    """Where the API description is served: FastAPI's defaults, or nowhere (404s), for
    operators who would rather not publish the API's shape."""
    if enabled:
        return {"docs_url": "/docs", "redoc_url": "/redoc", "openapi_url": "/openapi.json"}
    return {"docs_url": None, "redoc_url": None, "openapi_url": None}


def _add_open_routes(app: FastAPI, runtime: Runtime) -> None:
    """Routes without an API key: health and metrics."""

    @app.get("/health")
    async def health() -> JSONResponse:
        if runtime.failure is not None:  # first: a dead engine still has a service
            return error_response(503, runtime.failure, code="engine_failed")
        if runtime.service is not None:
            return JSONResponse({"status": "ok", "model": runtime.service.engine.info.model_name})
        return JSONResponse({"status": "loading"}, status_code=503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        if runtime.service is not None and runtime.failure is None:
            runtime.metrics.observe_engine(await runtime.service.engine.stats())
            runtime.metrics.samples_in_flight.set(runtime.service.load.running)
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _add_api_routes(app: FastAPI, runtime: Runtime) -> None:
    """The `/v1` routes (behind `ApiKeyMiddleware` when keys are configured)."""

    @app.get("/v1/models", response_model=ModelList, responses=API_ERRORS)
    async def list_models() -> ModelList:
        info = runtime.completions().service.engine.info
        schemas = {name: s.json_schema() for name, s in runtime.strategies.items()}
        card = ModelCard(id=info.model_name, max_model_len=info.max_model_len, strategies=schemas)
        return ModelList(data=[card])

    @app.get("/v1/strategies", response_model=StrategyList, responses=API_ERRORS)
    async def list_strategies() -> StrategyList:
        """Every strategy with the JSON Schema of its `ttscale.params`."""
        cards = [
            StrategyCard(name=name, description=s.description, parameters=s.json_schema())
            for name, s in runtime.strategies.items()
        ]
        return StrategyList(data=cards)

    @app.get("/v1/verifiers", response_model=VerifierList, responses=API_ERRORS)
    async def list_verifiers() -> VerifierList:
        """Every verifier a strategy may name: kinds (outcome, process), model, backend."""
        verifiers = runtime.completions().service.verifiers
        return VerifierList(data=[VerifierCard(**entry) for entry in verifiers.catalog()])

    @app.post(
        "/v1/chat/completions",
        response_model=ChatCompletionResponse,
        responses={**COMPLETION_ERRORS, 200: {"content": STREAM_CONTENT}},
    )
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        return await runtime.completions().handle(body, request, "chat")

    @app.post(
        "/v1/completions",
        response_model=CompletionResponse,
        responses={**COMPLETION_ERRORS, 200: {"content": STREAM_CONTENT}},
    )
    async def completions(body: CompletionRequest, request: Request):
        """Text completion of a raw prompt (no chat template); same strategies."""
        return await runtime.completions().handle(body, request, "text")
