"""Where a benchmark's strategy runs happen: in this process, or a ttscale server.

Both return the same thing, the `ttscale` evidence of an API response (candidates, votes,
stop reason, budget spent), and both go through the service entry (`Service`) with the
server's limits, so a record means the same whichever way it was made.
The HTTP backend measures exactly what an API user gets, latency included.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from ttscale.engine.protocol import new_request_id
from ttscale.server.config import Settings
from ttscale.strategies.errors import RequestError
from ttscale.strategies.service import Service, ServiceRequest
from ttscale.strategies.strategy_choice import StrategyChoice
from ttscale.verifiers.math_grader import MathGrader

from .datasets import BenchError
from .grid import Setting

RETRIED_STATUSES = {429, 502, 503, 504}


@dataclass(frozen=True)
class Solved:
    """The `ttscale` evidence of one strategy run and how long that run took (the
    attempt that answered, not retries before it)."""

    evidence: dict[str, Any]
    latency_s: float


class Backend(Protocol):
    model_name: str
    kind: str
    dtype: str | None

    async def solve(
        self, messages: list[dict[str, str]], setting: Setting, params: dict[str, Any]
    ) -> Solved:
        """Run one setting on one prompt."""
        ...

    async def close(self) -> None: ...


class ProblemTooLong(Exception):
    """This problem's prompt does not fit the model's context: a failure of this job
    only, not a sign that the engine or server is down."""


class RequestRejected(BenchError):
    """The server refused a request (4xx): the grid is wrong, not the problem."""


class InProcessBackend:
    """The server's own service entry (engine, verifiers, strategies, limits), no HTTP."""

    kind = "in-process"

    def __init__(self, service: Service, *, owns_engine: bool = False) -> None:
        self.service = service
        self.model_name = service.engine.info.model_name
        self.dtype = service.engine.info.dtype
        self._owns_engine = owns_engine

    @classmethod
    async def open(cls, settings: Settings) -> InProcessBackend:
        from ttscale.engine.factory import open_engine
        from ttscale.server.wiring import build_service, engine_config

        engine = await open_engine(engine_config(settings))
        try:
            service = await build_service(settings, engine)
        except BaseException:
            await engine.close()
            raise
        return cls(service, owns_engine=True)

    @property
    def grader(self) -> MathGrader:
        return self.service.verifiers.grader

    async def solve(
        self, messages: list[dict[str, str]], setting: Setting, params: dict[str, Any]
    ) -> Solved:
        started = time.perf_counter()
        choice = StrategyChoice(strategy=setting.strategy, params=params, budget=setting.budget)
        request = ServiceRequest(
            request_id=new_request_id("bench"),
            model=self.model_name,
            messages=messages,
            choice=choice,
        )
        try:
            prepared = await self.service.prepare(request)
        except RequestError as exc:
            message, _ = exc.named(setting_field_name)
            if exc.code == "context_length_exceeded":
                raise ProblemTooLong(message) from exc
            raise RequestRejected(f"{setting.label}: {message}") from exc
        result = await self.service.execute(prepared)
        return Solved(result.evidence or {}, time.perf_counter() - started)

    async def close(self) -> None:
        if self._owns_engine:
            await self.service.close()


def setting_field_name(path: str) -> str:
    """What a benchmark's user calls a service field: a strategy parameter by its key in
    the setting (`self_consistency?n=4` says `n`), the budget's under `budget.`, and the
    sampling the run sets by its option (`--max-tokens`)."""
    if path.startswith("choice.params."):
        return path.removeprefix("choice.params.")
    if path.startswith("choice."):
        return path.removeprefix("choice.")
    if path.startswith("sampling."):
        return "--" + path.removeprefix("sampling.").replace("_", "-")
    return path


class HttpBackend:
    """A running ttscale server, called as any client would call it."""

    kind = "http"
    dtype = None

    def __init__(
        self,
        client: httpx.AsyncClient,
        model_name: str,
        *,
        retries: int = 3,
        backoff_s: float = 1.0,
    ) -> None:
        self.client = client
        self.model_name = model_name
        self.retries = retries
        self.backoff_s = backoff_s

    @classmethod
    async def connect(
        cls, url: str, api_key: str | None = None, client: httpx.AsyncClient | None = None
    ) -> HttpBackend:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        http = client or httpx.AsyncClient(
            base_url=url, headers=headers, timeout=httpx.Timeout(3600, connect=10)
        )
        try:
            response = await http.get("/v1/models")
        except httpx.HTTPError as exc:
            await http.aclose()
            raise BenchError(f"cannot reach the server at {url}: {exc}") from exc
        if response.status_code != 200:
            await http.aclose()
            raise BenchError(f"{url}/v1/models answered {response.status_code}: {_why(response)}")
        return cls(http, response.json()["data"][0]["id"])

    async def solve(
        self, messages: list[dict[str, str]], setting: Setting, params: dict[str, Any]
    ) -> Solved:
        body = {
            "model": self.model_name,
            "messages": messages,
            "ttscale": {"strategy": setting.strategy, "params": params, "budget": setting.budget},
        }
        response, latency_s = await self._post_with_retries("/v1/chat/completions", body)
        if _error_code(response) == "context_length_exceeded":
            raise ProblemTooLong(_why(response))
        if 400 <= response.status_code < 500 and response.status_code != 429:
            raise RequestRejected(f"the server refused {setting.label}: {_why(response)}")
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {_why(response)}")
        return Solved(response.json()["ttscale"], latency_s)

    async def _post_with_retries(
        self, path: str, body: dict[str, Any]
    ) -> tuple[httpx.Response, float]:
        """Transient trouble (a restarting server, a full queue, a dropped connection) is
        retried with backoff; a timeout is not (the request may still be running), and
        anything else is returned for the caller to judge, with the answering attempt's
        duration."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            started = time.perf_counter()
            try:
                response = await self.client.post(path, json=body)
            except httpx.TimeoutException:
                raise
            except httpx.TransportError:
                if last:
                    raise
            else:
                if response.status_code not in RETRIED_STATUSES or last:
                    return response, time.perf_counter() - started
            await asyncio.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self.client.aclose()


def _why(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def _error_code(response: httpx.Response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
