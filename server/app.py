"""FastAPI application: engine lifecycle and the HTTP routes.

The engine loads in the background after start-up so that `/health` can answer
"loading" (503) while vLLM starts, then "ok" (200). All per-process state lives on
`app.state.runtime`; nothing is global.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from strategies.base import Verifiers
from strategies.registry import Strategy, discover
from verifiers.judge import LLMJudge
from verifiers.math_grader import MathGrader

from .api.completion_flow import Services, complete
from .api.errors import APIError, error_response, install_error_handlers
from .api.request_ids import RequestIdMiddleware
from .api.schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
    StrategyCard,
    StrategyList,
)
from .config import Settings
from .engine.factory import open_engine
from .engine.protocol import Engine
from .metrics import CONTENT_TYPE_LATEST, Metrics

logger = logging.getLogger("ttscale.server")

EngineOpener = Callable[[Settings], Awaitable[Engine]]


async def build_verifiers(settings: Settings, engine: Engine) -> Verifiers:
    """Math grading workers and the judge (the served model asked for P(Yes))."""
    grader = MathGrader(workers=settings.grader_workers)
    await grader.warm_up()
    judge = LLMJudge(engine)
    return Verifiers(grader, outcome={"judge": judge}, process={"judge": judge})


@dataclass
class Runtime:
    """The one engine of this process and its loading state."""

    settings: Settings
    engine: Engine | None = None
    verifiers: Verifiers | None = None
    strategies: dict[str, Strategy] = field(default_factory=discover)
    metrics: Metrics = field(default_factory=Metrics)
    load_error: str | None = None
    loader: asyncio.Task[None] | None = field(default=None, repr=False)

    def services(self) -> Services:
        return Services(
            self.settings, self.require_engine(), self.verifiers, self.strategies, self.metrics
        )

    def require_engine(self) -> Engine:
        if self.engine is None:
            message = self.load_error or "the model is still loading; retry shortly"
            raise APIError(503, message, code="engine_not_ready")
        return self.engine


def create_app(
    settings: Settings,
    *,
    open_engine_fn: EngineOpener = open_engine,
    on_engine_failure: Callable[[str], None] | None = None,
) -> FastAPI:
    runtime = Runtime(settings)

    async def load() -> None:
        started = time.perf_counter()
        try:
            engine = await open_engine_fn(settings)
            runtime.verifiers = await build_verifiers(settings, engine)
            runtime.engine = engine
        except Exception as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            runtime.load_error = f"engine failed to start: {detail}"
            logger.error("%s", runtime.load_error)
            if on_engine_failure is not None:
                on_engine_failure(runtime.load_error)
            return
        info = runtime.engine.info
        logger.info(
            "engine ready: model=%s backend=%s max_model_len=%d load_s=%.1f",
            info.model_name,
            info.backend,
            info.max_model_len,
            time.perf_counter() - started,
        )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runtime.loader = asyncio.create_task(load(), name="engine-loader")
        try:
            yield
        finally:
            if not runtime.loader.done():
                runtime.loader.cancel()
            if runtime.verifiers is not None:
                runtime.verifiers.grader.close()
                runtime.verifiers = None
            if runtime.engine is not None:
                logger.info("stopping engine")
                await runtime.engine.close()
                runtime.engine = None

    app = FastAPI(
        title="ttscale",
        version="0.1.0",
        description="Test-time-scaling inference server with an OpenAI-compatible API.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_error_handlers(app)

    app.add_middleware(RequestIdMiddleware)

    @app.get("/health")
    async def health() -> JSONResponse:
        if runtime.engine is not None:
            return JSONResponse({"status": "ok", "model": runtime.engine.info.model_name})
        if runtime.load_error is not None:
            return error_response(503, runtime.load_error, code="engine_failed")
        return JSONResponse({"status": "loading"}, status_code=503)

    def check_api_key(request: Request) -> None:
        """With keys configured, /v1 routes need `Authorization: Bearer <key>`."""
        if not settings.api_keys:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or key not in settings.api_keys:
            raise APIError(401, "invalid or missing API key", code="invalid_api_key")

    guarded = [Depends(check_api_key)]

    @app.get("/v1/models", response_model=ModelList, dependencies=guarded)
    async def list_models() -> ModelList:
        info = runtime.require_engine().info
        card = ModelCard(
            id=info.model_name,
            max_model_len=info.max_model_len,
            strategies={name: s.json_schema() for name, s in runtime.strategies.items()},
        )
        return ModelList(data=[card])

    @app.get("/v1/strategies", response_model=StrategyList, dependencies=guarded)
    async def list_strategies() -> StrategyList:
        """Every strategy with the JSON Schema of its `ttscale.params`."""
        return StrategyList(
            data=[
                StrategyCard(name=name, description=s.description, parameters=s.json_schema())
                for name, s in runtime.strategies.items()
            ]
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse, dependencies=guarded)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        return await complete(runtime.services(), body, request, "chat")

    @app.post("/v1/completions", response_model=CompletionResponse, dependencies=guarded)
    async def completions(body: CompletionRequest, request: Request):
        """Text completion of a raw prompt (no chat template); same strategies."""
        return await complete(runtime.services(), body, request, "text")

    return app
