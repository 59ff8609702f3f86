"""Prometheus metrics of one server process (its own registry: nothing global)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ttscale.strategies.budget import Usage

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
        self.budget_stops = Counter(
            "ttscale_budget_stops",
            "Strategy runs stopped by their budget",
            ["strategy"],
            registry=self.registry,
        )

    def record(self, strategy: str, outcome: str, seconds: float, usage: Usage | None) -> None:
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

    def budget_stop(self, strategy: str) -> None:
        self.budget_stops.labels(strategy).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
