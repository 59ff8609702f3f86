"""Prometheus metrics of one server process (its own registry: nothing global)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ttscale.engine.types import EngineStats
from ttscale.strategies.budget import Spending
from ttscale.verifiers.request_grading import GradingTally

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ttscale_requests",
            "Completion requests by strategy and outcome",
            ["strategy", "outcome"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "ttscale_tokens",
            "Tokens by kind (prompt, cached_prompt, generated, aborted, verifier)",
            ["kind"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ttscale_strategy_latency_seconds",
            "Wall time of a request by strategy",
            ["strategy"],
            registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
        )
        self.samples_aborted = Counter(
            "ttscale_samples_aborted",
            "Samples aborted (early stops, budgets, disconnects)",
            registry=self.registry,
        )
        self.responses = Counter(
            "ttscale_http_responses",
            "HTTP responses by route and status code",
            ["route", "status"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "ttscale_completions_in_flight",
            "Completion requests being served (queued in the engine included)",
            registry=self.registry,
        )
        self.rejected = Counter(
            "ttscale_admission_rejections",
            "Completion requests refused because too many were in flight (429)",
            registry=self.registry,
        )
        self.samples_in_flight = Gauge(
            "ttscale_samples_in_flight",
            "Samples this server's requests have in flight (what adaptive requests read)",
            registry=self.registry,
        )
        self.engine_running = Gauge(
            "ttscale_engine_running_requests", "Engine requests running", registry=self.registry
        )
        self.engine_waiting = Gauge(
            "ttscale_engine_waiting_requests", "Engine requests waiting", registry=self.registry
        )
        self.kv_cache_usage = Gauge(
            "ttscale_engine_kv_cache_usage",
            "Fraction of the KV cache in use",
            registry=self.registry,
        )
        self.prefix_cache_queries = Gauge(
            "ttscale_engine_prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache since the engine started",
            registry=self.registry,
        )
        self.prefix_cache_hits = Gauge(
            "ttscale_engine_prefix_cache_hits",
            "Prompt tokens served from the prefix cache since the engine started",
            registry=self.registry,
        )
        self.prefix_cache_hit_rate = Gauge(
            "ttscale_engine_prefix_cache_hit_rate",
            "Prefix-cache hits / queries since the engine started",
            registry=self.registry,
        )
        self.budget_stops = Counter(
            "ttscale_budget_stops",
            "Strategy runs stopped by their budget",
            ["strategy"],
            registry=self.registry,
        )

        self.grading_seconds = Histogram(
            "ttscale_grading_seconds",
            "Wall time one request spent grouping answers by math equivalence",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
        )
        self.grading_timeouts = Counter(
            "ttscale_grading_timeouts",
            "Grading checks killed at their timeout (seen while their request graded)",
            registry=self.registry,
        )
        self.grading_deadlines = Counter(
            "ttscale_grading_deadline_reached",
            "Requests whose grading ran out of their grading deadline",
            registry=self.registry,
        )

    def record(self, strategy: str, outcome: str, seconds: float, usage: Spending | None) -> None:
        self.requests.labels(strategy, outcome).inc()
        self.latency.labels(strategy).observe(seconds)
        if usage is None:
            return
        self.tokens.labels("prompt").inc(usage.prompt_tokens)
        self.tokens.labels("cached_prompt").inc(usage.cached_prompt_tokens)
        self.tokens.labels("generated").inc(usage.generated_tokens)
        self.tokens.labels("aborted").inc(usage.aborted_tokens)
        self.tokens.labels("verifier").inc(usage.verifier_tokens)
        self.samples_aborted.inc(usage.samples_aborted)

    def grading(self, tally: GradingTally | None) -> None:
        """One request's grading, if it grouped answers."""
        if tally is None or not tally.calls:
            return
        self.grading_seconds.observe(tally.seconds)
        self.grading_timeouts.inc(tally.timeouts)
        if tally.deadline_reached:
            self.grading_deadlines.inc()

    def observe_engine(self, stats: EngineStats) -> None:
        """The engine's load at scrape time."""
        self.engine_running.set(stats.running)
        self.engine_waiting.set(stats.waiting)
        self.kv_cache_usage.set(stats.kv_cache_usage)
        self.prefix_cache_queries.set(stats.prefix_cache_queries)
        self.prefix_cache_hits.set(stats.prefix_cache_hits)
        queries = stats.prefix_cache_queries
        self.prefix_cache_hit_rate.set(stats.prefix_cache_hits / queries if queries else 0.0)

    def response(self, route: str, status: int) -> None:
        self.responses.labels(route, str(status)).inc()

    def budget_stop(self, strategy: str) -> None:
        self.budget_stops.labels(strategy).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
