"""A reward model behind its own vLLM pooling server, reached by a ttscale server over
HTTP, and killed mid-run: the requests that need it are 503s, never a hang, and the
ttscale server stays up."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from .support.servers import serving_engine, tiny_prm_server_args, vllm_api_process
from .support.tiny_models import TINY_MODEL_NAME
from .test_reward_serving import _chat


@pytest.fixture(scope="module")
def remote_prm(
    starts_vllm, subprocess_env, tmp_path_factory
) -> Iterator[tuple[str, subprocess.Popen]]:
    """The tiny PRM behind its own vLLM pooling server (killed by the test below)."""
    args = tiny_prm_server_args()
    with vllm_api_process(args, subprocess_env, tmp_path_factory.mktemp("prm")) as server:
        yield server


async def test_a_remote_prm_guides_best_of_n_and_its_death_is_a_503(engine, remote_prm):
    prm_url, prm_process = remote_prm
    async with serving_engine(engine, prm=[f"remote-prm={prm_url}"]) as url:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            listing = (await http.get("/v1/verifiers")).json()["data"]
            entry = next(e for e in listing if e["name"] == "remote-prm")
            assert entry["kinds"] == ["process"] and entry["backend"] == "vllm-pooling-remote"
            body = _chat(TINY_MODEL_NAME, "best_of_n", n=2, verifier="remote-prm")
            reply = await http.post("/v1/chat/completions", json=body)
            assert reply.status_code == 200, reply.text
            evidence = reply.json()["ttscale"]
            assert all(c["scores"]["remote-prm_steps"] for c in evidence["candidates"])
            assert evidence["budget"]["spent"]["verifier_tokens"] > 0
            _crash(prm_process)
            started = time.monotonic()
            reply = await http.post("/v1/chat/completions", json=body)
            assert reply.status_code == 503
            assert reply.json()["error"]["code"] == "engine_unavailable"
            assert time.monotonic() - started < 30
            assert (await http.get("/health")).status_code == 200  # the server itself is fine


def _crash(process: subprocess.Popen) -> None:
    """Kill a vLLM server and its engine processes at once, as a crash of the machine's
    process group would (killing only the parent would leave its engine running)."""
    import psutil

    children = psutil.Process(process.pid).children(recursive=True)
    process.kill()
    for child in children:
        child.kill()
    process.wait(timeout=30)
    psutil.wait_procs(children, timeout=30)
