"""`docker/compose.yaml`, checked without a container engine: valid against the Compose
specification (the `compose_spec` parser), and wired the way the docs say (both
profiles complete, health checks and restart policies everywhere, the router's workers
are the replicas, the front talks to the router)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_spec import PyCompose

COMPOSE = Path(__file__).resolve().parents[1] / "docker" / "compose.yaml"
PROFILES = ("gpu", "cpu")


def _with_defaults(text: str) -> str:
    """Interpolate `${NAME:-default}` the way Compose does when NAME is unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", lambda m: m.group(1), text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The file as Compose reads it: defaults interpolated, YAML merge keys resolved."""
    return yaml.safe_load(_with_defaults(COMPOSE.read_text()))


def _services(compose: dict[str, Any], profile: str) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if profile in service.get("profiles", [profile])
    }


def test_the_file_follows_the_compose_specification(compose):
    parsed = PyCompose.from_yaml(yaml.safe_dump(compose))
    parsed.validate()
    assert sorted(parsed.service_names()) == sorted(compose["services"])


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_runs_two_replicas_a_router_and_a_front(compose, profile):
    services = _services(compose, profile)
    replicas = {n for n in services if n.startswith("vllm-")}
    assert len(replicas) == 2
    assert set(services) == replicas | {"router", "front"}
    aliases = {
        alias for name in replicas for alias in services[name]["networks"]["default"]["aliases"]
    }
    assert aliases == {"replica-0", "replica-1"}


@pytest.mark.parametrize("profile", PROFILES)
def test_every_service_has_a_health_check_and_restarts(compose, profile):
    for name, service in _services(compose, profile).items():
        assert service["restart"] == "unless-stopped", name
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD" and "http://localhost:8000/" in test[-1], name


def test_the_router_routes_to_the_replicas_by_session_key(compose):
    command = compose["services"]["router"]["command"]
    workers = command[command.index("--worker-urls") + 1 : command.index("--worker-urls") + 3]
    assert workers == ["http://replica-0:8000", "http://replica-1:8000"]
    assert "--policy=consistent_hash" in command
    # the router's /health is a 503 while any one worker is down; readiness is not
    assert "/readiness" in compose["services"]["router"]["healthcheck"]["test"][-1]


def test_the_front_is_a_client_of_the_healthy_router(compose):
    front = compose["services"]["front"]
    command = front["command"]
    assert command[command.index("--engine") + 1] == "remote"
    assert command[command.index("--remote-url") + 1] == "http://router:8000"
    assert front["depends_on"]["router"]["condition"] == "service_healthy"


def test_gpu_replicas_own_one_gpu_each_and_cpu_replicas_one_core_each(compose):
    services = compose["services"]
    gpus = [
        services[f"vllm-gpu-{i}"]["deploy"]["resources"]["reservations"]["devices"][0]
        for i in range(2)
    ]
    assert [g["device_ids"] for g in gpus] == [["0"], ["1"]]
    assert services["vllm-gpu-0"]["image"].startswith("vllm/vllm-openai:")
    cores = [services[f"vllm-cpu-{i}"]["cpuset"] for i in range(2)]
    binds = [
        services[f"vllm-cpu-{i}"]["environment"]["VLLM_CPU_OMP_THREADS_BIND"] for i in range(2)
    ]
    assert cores == binds == ["0", "1"]


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="no `docker compose` here",
)
@pytest.mark.parametrize("profile", PROFILES)
def test_docker_compose_accepts_the_file(profile):
    """Where the Compose plugin exists (it needs no daemon for `config`)."""
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "--profile", profile, "config", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
