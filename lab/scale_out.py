"""Scale-out on vllm-router, measured on this machine.

Two vLLM replicas (each pinned to its share of the cores, as each would own a GPU) behind
two vllm-router processes (`consistent_hash` and `round_robin`), driven by the real
service entry with a TTS workload: per question, self-consistency (N samples of one
prompt) and a step search (steps that continue the prompt, judged by the model).

1. Prefix-cache hits per replica, from each replica's own counters
   (`vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total`), for
   consistent_hash with ttscale's routing key, consistent_hash without it (the router
   then keys token-id prompts by length), and round_robin.
2. Throughput (generated tokens/s, all of the workload's engine requests) of one replica
   (the front talks to replica 0 directly) against two (through the router, keyed), in
   interleaved rounds so that both see the same machine load; the ratio per round.

Every round takes questions no earlier round used, so no cache carries over.

    .venv/bin/python -m lab.scale_out --reps 3 --out lab/records/scale_out
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.cluster import Cluster, local_cluster, start_router
from ttscale.benchmarks.datasets import DATA_DIR
from ttscale.engine.model_store import ensure_default_model
from ttscale.engine.protocol import new_request_id
from ttscale.engine.remote import RemoteVLLMEngine, parse_prometheus
from ttscale.server.config import Settings
from ttscale.server.wiring import build_service
from ttscale.strategies.service import Service, ServiceRequest
from ttscale.strategies.strategy_choice import StrategyChoice

DATA = DATA_DIR / "gsm8k.jsonl"
COUNTERS = (
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:generation_tokens_total",
    "vllm:request_success_total",
)


def workload(max_tokens: int, n: int) -> list[StrategyChoice]:
    """What one question costs: self-consistency and a judged step search."""
    step = {"verifier": "judge", "beam_width": 2, "expansions": 2, "max_steps": 2,
            "step_max_tokens": max_tokens // 2, "refine_rounds": 0}  # fmt: skip
    return [
        StrategyChoice(strategy="self_consistency", params={"n": n}),
        StrategyChoice(strategy="step_search", params=step),
    ]


def questions() -> Iterator[str]:
    for line in DATA.read_text().splitlines():
        yield json.loads(line)["problem"]


@dataclass
class Round:
    label: str
    rep: int
    seconds: float
    replicas: list[dict[str, float]]
    """Per replica: the counters' increase during the round."""

    @property
    def tokens(self) -> float:
        return sum(r["vllm:generation_tokens_total"] for r in self.replicas)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


async def scrape(urls: list[str]) -> list[dict[str, float]]:
    async with httpx.AsyncClient(timeout=10) as client:
        texts = [(await client.get(f"{url}/metrics")).text for url in urls]
    return [{name: parse_prometheus(t).get(name, 0.0) for name in COUNTERS} for t in texts]


async def open_service(url: str, routing_keys: bool) -> Service:
    probe = await RemoteVLLMEngine.connect([url])
    await probe.close()
    engine = RemoteVLLMEngine([url], probe.info, routing_keys=routing_keys)
    settings = Settings(engine="remote", remote_urls=[url], grader_workers=1)
    return await build_service(settings, engine)


async def solve(service: Service, question: str, choice: StrategyChoice, max_tokens: int) -> None:
    request = ServiceRequest(
        request_id=new_request_id("scale"),
        model=service.engine.info.model_name,
        messages=[{"role": "user", "content": question}],
        choice=choice,
    )
    prepared = await service.prepare(request)
    await service.execute(prepared)


async def run_round(
    label: str, rep: int, service: Service, replica_urls: list[str], batch: list[str],
    args: argparse.Namespace,
) -> Round:  # fmt: skip
    """Every question of `batch` through the workload, `args.concurrency` at a time."""
    gate = asyncio.Semaphore(args.concurrency)
    choices = workload(args.max_tokens, args.n)

    async def one(question: str) -> None:
        async with gate:
            for choice in choices:
                await solve(service, question, choice, args.max_tokens)

    before = await scrape(replica_urls)
    started = time.perf_counter()
    await asyncio.gather(*(one(q) for q in batch))
    seconds = time.perf_counter() - started
    after = await scrape(replica_urls)
    grown = [{k: a[k] - b[k] for k in COUNTERS} for a, b in zip(after, before, strict=True)]
    result = Round(label, rep, seconds, grown)
    print(f"{label} rep {rep}: {result.tokens:.0f} tokens in {seconds:.1f} s "
          f"= {result.tokens_per_s:.1f} tok/s; " + describe(grown), flush=True)  # fmt: skip
    return result


def describe(replicas: list[dict[str, float]]) -> str:
    parts = []
    for i, r in enumerate(replicas):
        rate = hit_rate(r)
        shown = "n/a" if rate is None else f"{rate:.1%}"
        parts.append(f"replica{i}: {r['vllm:request_success_total']:.0f} req, hits {shown}")
    return "; ".join(parts)


def hit_rate(counters: dict[str, float]) -> float | None:
    queries = counters["vllm:prefix_cache_queries_total"]
    return counters["vllm:prefix_cache_hits_total"] / queries if queries else None


async def measure(cluster: Cluster, rr_url: str, args: argparse.Namespace) -> dict[str, Any]:
    urls = [r.url for r in cluster.replicas]
    assert cluster.router is not None
    services = {
        "consistent_hash + key": await open_service(cluster.router.url, True),
        "consistent_hash, no key": await open_service(cluster.router.url, False),
        "round_robin": await open_service(rr_url, False),
        "1 replica (direct)": await open_service(urls[0], True),
    }
    source = questions()

    def batch() -> list[str]:
        return [next(source) for _ in range(args.questions)]

    rounds: list[Round] = []
    routed = ["consistent_hash + key", "consistent_hash, no key", "round_robin"]
    try:
        for rep in range(args.reps):  # 1: cache hits by routing, order rotated per rep
            for label in routed[rep % 3 :] + routed[: rep % 3]:
                rounds.append(await run_round(label, rep, services[label], urls, batch(), args))
        for rep in range(args.reps):  # 2: one replica against two, interleaved
            pair = ["1 replica (direct)", "consistent_hash + key"]
            for label in pair if rep % 2 == 0 else pair[::-1]:
                result = await run_round(label, rep, services[label], urls, batch(), args)
                result.label = "2 replicas (router)" if label != pair[0] else label
                rounds.append(result)
    finally:
        for service in services.values():
            await service.close()
    return summarize(rounds, args.reps)


def summarize(rounds: list[Round], reps: int) -> dict[str, Any]:
    by_label: dict[str, list[Round]] = {}
    for r in rounds:
        by_label.setdefault(r.label, []).append(r)
    hits = {}
    for label, group in by_label.items():
        per_replica = []
        for i in range(len(group[0].replicas)):
            total = {k: sum(r.replicas[i][k] for r in group) for k in COUNTERS}
            per_replica.append({"requests": total["vllm:request_success_total"],
                                "hit_rate": hit_rate(total)})  # fmt: skip
        hits[label] = per_replica
    one = by_label["1 replica (direct)"]
    two = by_label["2 replicas (router)"]
    ratios = [b.tokens_per_s / a.tokens_per_s for a, b in zip(one, two, strict=True)]
    return {
        "rounds": [asdict(r) | {"tokens_per_s": r.tokens_per_s} for r in rounds],
        "hit_rates": hits,
        "throughput": {
            "one_replica_tok_s": [a.tokens_per_s for a in one],
            "two_replicas_tok_s": [b.tokens_per_s for b in two],
            "ratios": ratios,
            "median_ratio": statistics.median(ratios),
        },
        "reps": reps,
    }


def machine() -> dict[str, Any]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    names = [line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line]
    cpu = names[0] if names else platform.processor()
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "amx": "amx" in lscpu}


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def report(summary: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        "| routing | replica 0: requests, prefix-cache hit rate | replica 1: requests, hit rate |",
        "|---|---|---|",
    ]
    for label, per in summary["hit_rates"].items():
        cells = [f"{r['requests']:.0f}, {_rate(r['hit_rate'])}" for r in per]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    t = summary["throughput"]
    rows = zip(t["one_replica_tok_s"], t["two_replicas_tok_s"], t["ratios"], strict=True)
    lines += ["", "| rep | 1 replica tok/s | 2 replicas tok/s | ratio |", "|---|---|---|---|"]
    lines += [f"| {i} | {a:.1f} | {b:.1f} | {r:.2f} |" for i, (a, b, r) in enumerate(rows)]
    lines.append(
        f"\nmedian ratio {t['median_ratio']:.2f}; {summary['machine']}; "
        f"{args.questions} questions a round, {args.concurrency} at a time, "
        f"n={args.n}, max_tokens={args.max_tokens}"
    )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    model = Path(args.model) if args.model else ensure_default_model()
    log_dir = Path(tempfile.mkdtemp(prefix="scale-out-"))
    with local_cluster(
        model, 2, log_dir, name="model", kv_gib=args.kv_gib, block_size=args.block_size
    ) as cluster:
        rr, _ = start_router([r.url for r in cluster.replicas], log_dir, policy="round_robin",
                             name="router-rr")  # fmt: skip
        cluster.extra.append(rr)
        summary = await measure(cluster, rr.url, args)
    summary["machine"] = machine()
    summary["args"] = vars(args)
    return summary


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory (default: the embedded SmolLM2)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--questions", type=int, default=6, help="questions per round")
    parser.add_argument("--concurrency", type=int, default=3, help="questions at a time")
    parser.add_argument("--n", type=int, default=6, help="self-consistency samples")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--kv-gib", type=int, default=1, help="KV cache per CPU replica")
    parser.add_argument(
        "--block-size", type=int, default=32, help="KV block size (vLLM's CPU default: 128)"
    )
    parser.add_argument("--out", type=Path, help="write run.json and report.md here")
    args = parser.parse_args()
    summary = asyncio.run(main(args))
    text = report(summary, args)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "run.json").write_text(json.dumps(summary, indent=2, default=str))
        (args.out / "report.md").write_text(text + "\n")


if __name__ == "__main__":
    cli()
