"""The browser view: static files under `/ui`, shipped in the package (`server/ui/`).

No build step and nothing fetched at run time: plain HTML, CSS and JavaScript that call
the API (`/v1/strategies`, `/v1/chat/completions` streamed) like any other client, so
API keys apply to what the page does, not to the page itself. `ttscale bench view`
serves the same files over a benchmark run directory.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

UI_DIR = Path(__file__).parent / "ui"
UI_PATH = "/ui"


def add_ui_routes(app: FastAPI, directory: Path = UI_DIR) -> None:
    """Serve `directory` at `/ui/` (`/ui` redirects there, so relative links resolve)."""

    @app.get(UI_PATH, include_in_schema=False)
    async def ui_root() -> RedirectResponse:
        return RedirectResponse(f"{UI_PATH}/")

    app.mount(f"{UI_PATH}/", StaticFiles(directory=directory, html=True), name="ui")
