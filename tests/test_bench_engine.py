"""`ttscale bench` through the real engine: in process, and as a CLI against a server
(resume and Ctrl-C included)."""

from __future__ import annotations

import asyncio
import csv
import io
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ttscale.benchmarks.backends import InProcessBackend
from ttscale.benchmarks.cli import main as bench_main
from ttscale.benchmarks.datasets import Selection, load_dataset, select
from ttscale.benchmarks.grid import SamplingConfig, build_grid
from ttscale.benchmarks.records import RunConfig, open_run, read_records
from ttscale.benchmarks.report import build_report
from ttscale.benchmarks.runner import DEFAULT_PROMPT, Runner
from ttscale.strategies.base import Verifiers
from ttscale.strategies.registry import discover
from ttscale.strategies.service import Service

from .support.servers import BorrowedEngine, serving_engine, wait_until_idle

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
async def server_url(engine) -> AsyncIterator[str]:
    async with serving_engine(engine) as url:
        yield url


async def test_in_process_run_then_report_and_replay(engine, grader, tmp_path):
    problems = select(load_dataset("gsm8k"), Selection(limit=2))
    sampling = SamplingConfig(max_tokens=24)
    grid = build_grid(["self_consistency", "inverse_entropy"], [1, 2], sampling, discover())
    backend = InProcessBackend(Service(BorrowedEngine(engine), Verifiers(grader), discover()))
    assert backend.dtype == engine.info.dtype is not None  # recorded with the run
    open_run(tmp_path, RunConfig(model=backend.model_name, backend=backend.kind,
                                 dtype=backend.dtype, prompt_template=DEFAULT_PROMPT,
                                 sampling=sampling))  # fmt: skip
    runner = Runner(backend, grader, tmp_path, concurrency=2, progress_stream=io.StringIO())
    outcome = await runner.run(problems, grid)
    assert (outcome.done, outcome.failures) == (8, [])

    records = read_records(tmp_path)
    assert {(r.setting, r.problem_id) for r in records} == {
        (s.label, p.id) for s in grid for p in problems
    }
    for r in records:
        assert len(r.samples) == r.n
        assert [s.index for s in r.samples] == list(range(r.n))  # seed = request's + index
        assert r.generated_tokens == sum(s.tokens for s in r.samples) > 0
        assert r.flops > 0 and r.latency_s > 0 and r.prompt_tokens > 0
        # every sample carries entropy and logprob (traced), whatever the strategy
        assert all(s.mean_entropy is not None and s.mean_logprob is not None for s in r.samples)
        assert r.correct is False or r.answer is not None

    files = build_report(tmp_path, draws=50)
    report = files.report.read_text()
    assert f"(in-process, {engine.info.dtype})" in report
    for heading in ("## gsm8k (2 problems)", "### Paired differences against `self_consistency`",
                    "### Replay: rules at k samples", "| inverse_entropy@2 | 2 |"):  # fmt: skip
        assert heading in report
    rows = list(csv.DictReader(files.summary.open()))
    assert [r["setting"] for r in rows] == [
        "inverse_entropy@1", "inverse_entropy@2", "self_consistency@1", "self_consistency@2",
    ]  # fmt: skip
    for row in rows:
        assert 0.0 <= float(row["ci_low"]) <= float(row["accuracy"]) <= float(row["ci_high"])
    methods = {r["method"] for r in csv.DictReader(files.replay.open())}
    assert {"pass@k", "majority", "inverse_entropy", "best_of_n(logprob)"} <= methods
    assert [p.name for p in files.plots] == ["gsm8k_compute.png", "gsm8k_replay.png"]
    assert all(p.read_bytes().startswith(PNG) for p in files.plots)


async def _bench(out: Path, url: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ttscale.cli", "bench", "run", "--url", url,
        "--dataset", "gsm8k", "--limit", "3", "--n", "1,2", "--max-tokens", "48",
        "--strategy", "self_consistency", "--strategy", "ie=inverse_entropy",
        "--concurrency", "1", "--out", str(out), "--draws", "50",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip


async def test_cli_against_a_server_survives_ctrl_c_and_resumes(
    server_url, engine, subprocess_env, tmp_path
):
    out = tmp_path / "run"
    first = await _bench(out, server_url, subprocess_env)
    while len(read_records(out)) < 2:
        assert first.returncode is None, (await first.stderr.read()).decode()
        await asyncio.sleep(0.05)
    first.send_signal(signal.SIGINT)
    _, stderr = await asyncio.wait_for(first.communicate(), timeout=120)
    assert first.returncode == 130, stderr.decode()
    assert "rerun the same command to resume" in stderr.decode()
    kept = read_records(out)
    assert 2 <= len(kept) < 12
    assert (out / "report.md").exists()  # a report of what was done
    assert await wait_until_idle(engine) == 0  # the server aborted the interrupted request

    second = await _bench(out, server_url, subprocess_env)
    stdout, stderr = await asyncio.wait_for(second.communicate(), timeout=300)
    assert second.returncode == 0, stderr.decode()
    assert f"(resumed {len(kept)})" in stderr.decode()
    records = read_records(out)
    assert len({r.key for r in records}) == len(records) == 12
    assert {r.setting for r in records} == {
        "self_consistency@1", "self_consistency@2", "ie@1", "ie@2",
    }  # fmt: skip
    summary = list(csv.DictReader(io.StringIO(stdout.decode())))
    assert {row["problems"] for row in summary} == {"3"}
    assert (out / "plots" / "gsm8k_compute.png").read_bytes().startswith(PNG)


def test_cli_usage_errors_are_one_line(tmp_path, capsys):
    assert bench_main(["run", "--dataset", "gsm9k"]) == 2
    assert "unknown dataset 'gsm9k'" in capsys.readouterr().err
    assert bench_main(["report", str(tmp_path)]) == 2
    assert "holds no benchmark run" in capsys.readouterr().err


def test_report_options_that_cannot_work_are_refused_before_the_run(capsys):
    assert bench_main(["run", "--n", "1,4", "--k", "8"]) == 2
    assert "--k 8 exceeds the replay pool's 4 samples" in capsys.readouterr().err
    assert bench_main(["run", "--pool", "nope@4"]) == 2
    assert "--pool 'nope@4' is not a setting of this run" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        bench_main(["run", "--draws", "0"])
    assert exit_info.value.code == 2
    assert "expected a positive integer, got 0" in capsys.readouterr().err
