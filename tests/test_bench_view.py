"""`ttscale bench view`: the routes that feed the browser view of a run directory."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ttscale.benchmarks.cli import main as bench_main
from ttscale.benchmarks.view import create_view_app

from .support.bench_fixtures import small_run


@pytest.fixture
async def view(tmp_path: Path):
    app = create_view_app(small_run(tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://view") as client:
        yield client


async def test_the_run_lists_right_and_wrong_per_problem_and_setting(view):
    run = (await view.get("/bench/run")).json()
    assert run["settings"] == ["self_consistency@1", "self_consistency@5"]
    marks = {p["problem_id"]: p["results"] for p in run["problems"]}
    assert marks == {
        "p1": {"self_consistency@1": True, "self_consistency@5": True},
        "p2": {"self_consistency@1": False, "self_consistency@5": True},
    }
    assert run["config"]["model"] == "m"
    assert [row["setting"] for row in run["summary"]] == run["settings"]
    assert "gsm8k_compute.png" in run["plots"]


async def test_one_record_has_its_samples(view):
    query = {"setting": "self_consistency@5", "dataset": "gsm8k", "problem": "p1"}
    record = (await view.get("/bench/record", params=query)).json()
    assert [s["answer"] for s in record["samples"]] == ["18", "18", "18", "20", "20"]
    missing = await view.get("/bench/record", params={**query, "problem": "p9"})
    assert missing.status_code == 404


async def test_only_the_runs_own_plots_are_served(view):
    plot = await view.get("/bench/plots/gsm8k_compute.png")
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")
    for name in ["..%2Frun.json", "records.jsonl", "nothing.png"]:
        assert (await view.get(f"/bench/plots/{name}")).status_code == 404, name


async def test_the_page_is_served_and_the_root_leads_to_it(view):
    assert (await view.get("/ui/")).status_code == 200
    root = await view.get("/")
    assert root.status_code == 307 and root.headers["location"] == "/ui/"


def test_a_directory_without_a_run_is_a_one_line_error(tmp_path, capsys):
    assert bench_main(["view", str(tmp_path)]) == 2
    assert "holds no benchmark run" in capsys.readouterr().err


def test_a_port_in_use_is_a_one_line_error(tmp_path, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = bench_main(["view", str(small_run(tmp_path)), "--port", str(port)])
    assert code == 2
    assert capsys.readouterr().err.strip().endswith(f"port {port} on 127.0.0.1 is already in use")
