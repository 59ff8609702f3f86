"""Contract fuzzing of the HTTP API with schemathesis.

    python -m tests.support.fuzz_api [--url URL] [--max-examples 1500] [--seed 1]

Schemathesis reads the server's own OpenAPI description (`/openapi.json`) and sends
requests generated from it, valid and invalid ones, with every check on: no 5xx,
status codes, content types, headers and bodies as described (streamed events too),
invalid requests refused, valid ones accepted. A failure is a defect of the server or
of its description. Without `--url` it serves the tiny random test model in a
subprocess, with small limits so that each generated request costs little.

Two settings make the generated requests reach the API's logic rather than stop at the
door:
- `model` is the served model (sometimes with a strategy suffix) in most requests, and
  `ttscale.strategy` a known strategy: random names would only meet the 404;
- on the completion routes, a schema-valid request may still get a 400: the rules
  that couple fields or depend on this server cannot be written in JSON Schema (`n` x
  `max_tokens` against the server's cap, the prompt against the context, `n` with a
  strategy, a strategy's own parameters, budgets against the server's limits).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

COMPLETION_ROUTES = ("POST /v1/chat/completions", "POST /v1/completions")
SERVER_LIMITS = {
    "TTSCALE_MAX_N": "2",
    "TTSCALE_MAX_REQUEST_TOKENS": "64",
    "TTSCALE_DEFAULT_MAX_TOKENS": "8",
    "TTSCALE_GRADING_DEADLINE_S": "2",
}
"""What `--url`-less runs serve with: every request generates at most 64 tokens."""


@dataclass
class FuzzSummary:
    """What one schemathesis run found (from its JSON report)."""

    cases: int
    failures: dict[str, int] = field(default_factory=dict)
    """'CODE title' -> test cases that failed it."""
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    complete: bool = True
    accepted: dict[str, int] = field(default_factory=dict)
    """Operation -> schema-valid cases it answered with a 2xx (so reached its logic)."""

    @property
    def ok(self) -> bool:
        return self.complete and not self.failures and not self.errors

    def describe(self) -> str:
        lines = [
            f"test cases: {self.cases}",
            f"failures: {sum(self.failures.values())}",
            *(f"  {name}: {count}" for name, count in sorted(self.failures.items())),
            f"errors: {len(self.errors)}",
            *(f"  {error}" for error in self.errors),
            "schema-valid cases answered 2xx:",
            *(f"  {operation}: {count}" for operation, count in sorted(self.accepted.items())),
            f"wall time: {self.seconds:.1f} s",
        ]
        return "\n".join(lines)

    @classmethod
    def from_report(cls, report: dict[str, Any], seconds: float) -> FuzzSummary:
        failures = {f"{f['code']} {f['title']}": int(f["count"]) for f in report["failures"]}
        errors = [json.dumps(error)[:300] for error in report.get("errors", [])]
        complete = bool(report.get("complete", True)) and report["stop_reason"] == "completed"
        accepted = {
            operation: sum(phase.get("accepted", 0) for phase in phases.values())
            for operation, phases in report.get("valid_rates", {}).items()
        }
        return cls(report["test_cases"]["generated"], failures, errors, seconds, complete, accepted)


def config_toml(model: str, strategies: list[str]) -> str:
    """The schemathesis configuration (see the module docstring for why)."""
    models = [model, *(f"{model}:{name}" for name in strategies)]
    allowed = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
    operations = "".join(
        f"\n[[operations]]\ninclude-name = {json.dumps(route)}\n"
        f"checks.positive_data_acceptance.expected-statuses = {json.dumps(allowed)}\n"
        for route in COMPLETION_ROUTES
    )
    return (
        f"[dictionaries.models]\nvalues = {json.dumps(models)}\n"
        f"[dictionaries.strategies]\nvalues = {json.dumps(strategies)}\n"
        "[parameters]\n"
        '"body.model" = { dictionary = "models", probability = 0.9 }\n'
        '"body.ttscale.strategy" = { dictionary = "strategies", probability = 0.8 }\n'
        f"{operations}"
    )


def run_schemathesis(
    url: str, *, max_examples: int, seed: int = 1, workers: int = 1, timeout_s: float = 3600
) -> FuzzSummary:
    """Every check of schemathesis against the server at `url`. Blocking."""
    model = httpx.get(f"{url}/v1/models", timeout=30).json()["data"][0]["id"]
    strategies = [s["name"] for s in httpx.get(f"{url}/v1/strategies", timeout=30).json()["data"]]
    with tempfile.TemporaryDirectory(prefix="ttscale-fuzz-") as work:
        config = Path(work, "schemathesis.toml")
        config.write_text(config_toml(model, strategies))
        report = Path(work, "report.json")
        command = [
            sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color",
            "run", f"{url}/openapi.json", "--checks", "all", "--continue-on-failure",
            "--max-examples", str(max_examples), "--seed", str(seed), "--workers", str(workers),
            "--request-timeout", "120", "--report", "json", "--report-json-path", str(report),
            "--output-sanitize", "false",
        ]  # fmt: skip
        started = time.perf_counter()
        run = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=work)
        seconds = time.perf_counter() - started
        if not report.exists():
            raise RuntimeError(f"schemathesis wrote no report:\n{run.stdout[-3000:]}{run.stderr}")
        summary = FuzzSummary.from_report(json.loads(report.read_text()), seconds)
    if not summary.ok:
        print(run.stdout[-20000:], file=sys.stderr)  # the failures, with curl reproductions
    return summary


@contextmanager
def tiny_server(port: int, log: Path) -> Iterator[str]:
    """`ttscale serve` on the tiny random test model, with `SERVER_LIMITS`."""
    from tests.support.tiny_models import tiny_model_dir

    env = {**os.environ, **SERVER_LIMITS}
    command = [sys.executable, "-m", "ttscale.cli", "serve", "--model", str(tiny_model_dir()),
               "--port", str(port), "--max-model-len", "512"]  # fmt: skip
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, server, log)
        yield url
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()


def _wait_ready(url: str, server: subprocess.Popen, log: Path, limit_s: float = 600) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"the server was not ready within {limit_s} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running ttscale server (default: serve the tiny model)")
    parser.add_argument("--max-examples", type=int, default=1500, help="per operation and phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=18431, help="for the tiny model's server")
    args = parser.parse_args(argv)

    def fuzz(url: str) -> FuzzSummary:
        return run_schemathesis(
            url, max_examples=args.max_examples, seed=args.seed, workers=args.workers
        )

    if args.url:
        summary = fuzz(args.url.rstrip("/"))
    else:
        with tempfile.TemporaryDirectory() as work:
            with tiny_server(args.port, Path(work, "server.log")) as url:
                summary = fuzz(url)
    print(summary.describe())
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
