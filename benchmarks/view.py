"""`ttscale bench view OUT`: the browser view over a benchmark run directory.

The same page as the server's `/ui`, fed by a few read-only routes under `/bench/`:
the run's identity (`run.json`), its summary (`summary.csv`), which problems each
setting got right, one record's samples, and the plots `ttscale bench report` drew.
Nothing is computed here that the report does not already hold, except the right and
wrong marks, read from the records.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel

from ttscale.server.browser import add_ui_routes
from ttscale.server.cli import StartupError, check_port_free

from .datasets import BenchError
from .records import Record, read_records, read_run_config
from .report import PLOTS, SUMMARY_CSV


class ProblemRow(BaseModel):
    """One problem of the run: right (True) or wrong per setting that ran it."""

    dataset: str
    problem_id: str
    gold: str
    results: dict[str, bool]


class RunView(BaseModel):
    """What the page shows first about a run."""

    config: dict[str, Any]
    summary: list[dict[str, str]]
    plots: list[str]
    settings: list[str]
    problems: list[ProblemRow]


def run_view(out: Path, records: list[Record]) -> RunView:
    config = read_run_config(out)
    summary_path = out / SUMMARY_CSV
    summary = list(csv.DictReader(summary_path.open())) if summary_path.exists() else []
    plots_dir = out / PLOTS
    plots = sorted(p.name for p in plots_dir.glob("*.png")) if plots_dir.is_dir() else []
    settings = list(dict.fromkeys(r.setting for r in records))
    problems: dict[tuple[str, str], ProblemRow] = {}
    for record in records:
        row = problems.setdefault(
            (record.dataset, record.problem_id),
            ProblemRow(
                dataset=record.dataset, problem_id=record.problem_id, gold=record.gold, results={}
            ),
        )
        row.results[record.setting] = record.correct
    return RunView(
        config=config.model_dump(mode="json"),
        summary=summary,
        plots=plots,
        settings=settings,
        problems=list(problems.values()),
    )


def create_view_app(out: Path) -> FastAPI:
    """The page and the run's routes; the records are read once, at start."""
    records = read_records(out)
    view = run_view(out, records)
    by_key = {(r.setting, r.dataset, r.problem_id): r for r in records}
    plots = {name: out / PLOTS / name for name in view.plots}
    app = FastAPI(title="ttscale bench view", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    @app.get("/bench/run")
    async def run() -> RunView:
        return view

    @app.get("/bench/record")
    async def record(setting: str, dataset: str, problem: str) -> Record:
        found = by_key.get((setting, dataset, problem))
        if found is None:
            raise HTTPException(404, f"no record of {problem} ({dataset}) under {setting}")
        return found

    @app.get("/bench/plots/{name}")
    async def plot(name: str) -> FileResponse:
        if name not in plots:  # only the run's own plots, never another path
            raise HTTPException(404, f"no plot named {name}")
        return FileResponse(plots[name], media_type="image/png")

    add_ui_routes(app)
    return app


def serve_view(out: Path, host: str, port: int) -> None:
    """Serve the view until interrupted; a run directory that is not one, or a port in
    use, is a `BenchError` (one line)."""
    import uvicorn

    app = create_view_app(out)
    try:
        check_port_free(host, port)
    except StartupError as exc:
        raise BenchError(str(exc)) from exc
    print(f"bench view of {out} on http://{host}:{port}/ui/", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
