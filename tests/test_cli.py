"""The `ttscale` command: clear one-line errors, and a real serve/shutdown cycle."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ttscale.cli import main as ttscale_cli
from ttscale.server import cli as server_cli

from .support.servers import free_port, wait_for_http

TTSCALE = [sys.executable, "-m", "ttscale.cli"]


def run_cli(*args: str, env: dict[str, str], timeout: float = 120):
    """`ttscale ARGS` as its own process (tests calling it use `subprocess_env`)."""
    return subprocess.run(
        [*TTSCALE, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def assert_one_line_error(result, fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ttscale: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_unknown_model_path(subprocess_env):
    result = run_cli(
        "serve", "--model", "/no/such/model", "--port", str(free_port()), env=subprocess_env
    )
    assert_one_line_error(result, "model path does not exist: /no/such/model")


def test_directory_without_config(tmp_path: Path, subprocess_env):
    result = run_cli(
        "serve", "--model", str(tmp_path), "--port", str(free_port()), env=subprocess_env
    )
    assert_one_line_error(result, "no config.json")


def test_unreadable_config(tmp_path: Path, subprocess_env):
    (tmp_path / "config.json").write_text("{broken")
    (tmp_path / "model.safetensors").write_bytes(b"")
    result = run_cli(
        "serve", "--model", str(tmp_path), "--port", str(free_port()), env=subprocess_env
    )
    assert_one_line_error(result, "unreadable model config")


def test_truncated_weights(tmp_path: Path, tiny_model_path: Path, subprocess_env):
    shutil.copy(tiny_model_path / "config.json", tmp_path / "config.json")
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00")
    result = run_cli(
        "serve", "--model", str(tmp_path), "--port", str(free_port()), env=subprocess_env
    )
    assert_one_line_error(result, "unreadable weights file")


def test_unknown_architecture(tmp_path: Path, tiny_model_path: Path, subprocess_env):
    config = json.loads((tiny_model_path / "config.json").read_text())
    config["model_type"] = "no-such-architecture"
    (tmp_path / "config.json").write_text(json.dumps(config))
    shutil.copy(tiny_model_path / "model.safetensors", tmp_path / "model.safetensors")
    result = run_cli(
        "serve", "--model", str(tmp_path), "--port", str(free_port()), env=subprocess_env
    )
    assert_one_line_error(result, "cannot read the model config")


def test_port_in_use(tiny_model_path: Path, subprocess_env):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(
            "serve", "--model", str(tiny_model_path), "--port", str(port), env=subprocess_env
        )
    assert_one_line_error(result, f"port {port} on 127.0.0.1 is already in use")


def test_invalid_setting_from_environment(subprocess_env):
    env = {**subprocess_env, "TTSCALE_PORT": "not-a-port"}
    result = run_cli("serve", env=env)
    assert_one_line_error(result, "invalid setting port")


def test_remote_engine_needs_a_url(subprocess_env):
    result = run_cli("serve", "--engine", "remote", "--port", str(free_port()), env=subprocess_env)
    assert_one_line_error(result, "--engine remote needs at least one --remote-url")


def test_missing_vllm_is_reported_in_one_line(monkeypatch, capsys, tiny_model_path):
    real_find_spec = server_cli.importlib.util.find_spec
    monkeypatch.setattr(
        server_cli.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "vllm" else real_find_spec(name, *a),
    )
    status = ttscale_cli.main(
        ["serve", "--model", str(tiny_model_path), "--port", str(free_port())]
    )
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and "vLLM is not installed" in err[0]


def test_serve_answers_and_shuts_down_gracefully(tiny_model_path: Path, subprocess_env, tmp_path):
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                *TTSCALE,
                "serve",
                "--model",
                str(tiny_model_path),
                "--port",
                str(port),
                "--max-model-len",
                "512",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=subprocess_env,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_http(f"{url}/health", process, 240, log_path)
            reply = httpx.post(
                f"{url}/v1/chat/completions",
                json={
                    "model": tiny_model_path.name,
                    "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 4,
                },
                timeout=60,
            )
            assert reply.status_code == 200, reply.text
            assert reply.json()["usage"]["completion_tokens"] >= 1
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                process.kill()
    output = log_path.read_text()
    assert "engine ready: model=" + tiny_model_path.name in output
    assert "stopping engine" in output
    assert "Application shutdown complete" in output
    assert "output_handler failed" not in output


def test_engine_that_fails_to_load_exits_non_zero(tiny_model_path: Path, subprocess_env, tmp_path):
    """Weights that do not fit the config pass the pre-checks but fail inside vLLM."""
    config = json.loads((tiny_model_path / "config.json").read_text())
    config["hidden_size"] = 256
    for name in ("tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        shutil.copy(tiny_model_path / name, tmp_path / name)
    (tmp_path / "config.json").write_text(json.dumps(config))
    result = run_cli(
        "serve",
        "--model",
        str(tmp_path),
        "--port",
        str(free_port()),
        env=subprocess_env,
        timeout=240,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ttscale: error: engine failed to start:"), result.stderr[-2000:]


def test_a_dead_engine_turns_health_to_503_and_exits_non_zero(
    tiny_model_path: Path, subprocess_env, tmp_path
):
    """The engine core process dies (here: killed): /health and requests answer 503 at
    once, and the server exits with status 1 so that a supervisor restarts it."""
    import psutil

    port = free_port()
    log_path = tmp_path / "serve.log"
    command = [*TTSCALE, "serve", "--model", str(tiny_model_path), "--port", str(port),
               "--max-model-len", "512"]  # fmt: skip
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=subprocess_env
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", process, 240, log_path)
        children = psutil.Process(process.pid).children(recursive=True)
        core = next(c for c in children if "EngineCore" in " ".join([*c.cmdline(), c.name()]))
        core.kill()
        deadline = time.monotonic() + 15
        while httpx.get(f"{url}/health", timeout=5).status_code != 503:
            assert time.monotonic() < deadline, "health still ok after the engine died"
            time.sleep(0.2)
        reply = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": tiny_model_path.name, "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert reply.status_code == 503
        assert process.wait(timeout=90) == 1
    finally:
        if process.poll() is None:
            process.kill()
    assert "ttscale: error: engine died" in log_path.read_text()


def test_bench_reward_models_load_in_process_and_not_with_a_server(monkeypatch, capsys):
    """`ttscale bench run --prm/--orm` hands them to the in-process service's settings;
    with --url the server has its own, and asking for them there is an error."""
    from ttscale.benchmarks import cli as bench_cli
    from ttscale.benchmarks.backends import InProcessBackend

    seen = []

    async def fake_open(settings):
        seen.append(settings)
        raise bench_cli.BenchError("stop here")

    monkeypatch.setattr(InProcessBackend, "open", staticmethod(fake_open))
    common = ["bench", "run", "--dataset", "gsm8k", "--limit", "1"]
    status = ttscale_cli.main([*common, "--prm", "math=/m/prm", "--orm", "/m/orm"])
    assert status == 2 and "stop here" in capsys.readouterr().err
    assert [s.name for s in seen[0].reward_models()] == ["math", "orm"]
    status = ttscale_cli.main([*common, "--url", "http://127.0.0.1:9", "--prm", "/m/prm"])
    assert status == 2
    assert "--prm/--orm/--reasoning-parser are for in-process runs" in capsys.readouterr().err
