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

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .api.errors import APIError, error_response, install_error_handlers
from .api.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ModelCard,
    ModelList,
    PromptTokensDetails,
    Usage,
)
from .config import Settings
from .engine.factory import open_engine
from .engine.protocol import Engine, new_request_id
from .engine.types import SamplingSpec

logger = logging.getLogger("ttscale.server")

EngineOpener = Callable[[Settings], Awaitable[Engine]]


@dataclass
class Runtime:
    """The one engine of this process and its loading state."""

    settings: Settings
    engine: Engine | None = None
    load_error: str | None = None
    loader: asyncio.Task[None] | None = field(default=None, repr=False)

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
            runtime.engine = await open_engine_fn(settings)
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

    @app.middleware("http")
    async def request_ids(request: Request, call_next):
        request_id = request.headers.get("x-request-id") or new_request_id("req")
        request.state.request_id = request_id
        response = await call_next(request)
        response.headers["x-request-id"] = request_id
        return response

    @app.get("/health")
    async def health() -> JSONResponse:
        if runtime.engine is not None:
            return JSONResponse({"status": "ok", "model": runtime.engine.info.model_name})
        if runtime.load_error is not None:
            return error_response(503, runtime.load_error, code="engine_failed")
        return JSONResponse({"status": "loading"}, status_code=503)

    @app.get("/v1/models", response_model=ModelList)
    async def list_models() -> ModelList:
        info = runtime.require_engine().info
        return ModelList(data=[ModelCard(id=info.model_name, max_model_len=info.max_model_len)])

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        engine = runtime.require_engine()
        info = engine.info
        if body.model != info.model_name:
            raise APIError(
                404,
                f"model {body.model!r} is not served here; this server serves {info.model_name!r}",
                param="model",
                code="model_not_found",
            )
        if body.stream:
            raise APIError(400, "stream=true is not supported yet by this server", param="stream")
        if body.n > settings.max_n:
            raise APIError(400, f"n must be at most {settings.max_n}", param="n")
        prompt_ids = await engine.render_chat(body.message_dicts())
        max_tokens = _max_tokens(body, len(prompt_ids), info.max_model_len, settings)
        spec = SamplingSpec(
            n=body.n,
            temperature=body.temperature,
            top_p=body.top_p,
            max_tokens=max_tokens,
            stop=tuple(body.stop or ()),
            seed=body.seed,
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
        )
        started = time.perf_counter()
        result = await engine.generate(prompt_ids, spec, request_id=request.state.request_id)
        completion_tokens = result.generated_tokens
        cached = min(s.cached_prompt_tokens for s in result.samples)
        logger.info(
            "request=%s model=%s n=%d prompt_tokens=%d completion_tokens=%d latency_s=%.2f",
            request.state.request_id,
            info.model_name,
            body.n,
            len(prompt_ids),
            completion_tokens,
            time.perf_counter() - started,
        )
        return ChatCompletionResponse(
            model=info.model_name,
            choices=[
                ChatChoice(
                    index=s.index,
                    message=AssistantMessage(content=s.text),
                    finish_reason=s.finish_reason,
                )
                for s in result.samples
            ],
            usage=Usage(
                prompt_tokens=len(prompt_ids),
                completion_tokens=completion_tokens,
                total_tokens=len(prompt_ids) + completion_tokens,
                prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
            ),
        )

    return app


def _max_tokens(
    body: ChatCompletionRequest, prompt_tokens: int, max_model_len: int, settings: Settings
) -> int:
    room = max_model_len - prompt_tokens
    if room < 1:
        raise APIError(
            400,
            f"the prompt is {prompt_tokens} tokens; this model's context is {max_model_len}",
            param="messages",
            code="context_length_exceeded",
        )
    requested = body.requested_max_tokens
    if requested is None:
        return min(settings.default_max_tokens, room)
    if requested > room:
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        raise APIError(
            400,
            f"{param}={requested} does not fit: the prompt is {prompt_tokens} tokens "
            f"and this model's context is {max_model_len}",
            param=param,
            code="context_length_exceeded",
        )
    return requested
