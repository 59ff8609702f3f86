"""The browser view's files: served at /ui from the package, self-contained, and off
with `--no-ui` / `TTSCALE_UI=false`. (What the page does is tests/test_browser_view.py.)"""

from __future__ import annotations

import re

import httpx
import pytest

from ttscale.cli.main import build_parser
from ttscale.server.browser import UI_DIR
from ttscale.server.cli import settings_from_args

from .support.fakes import Scripted, ScriptedEngine
from .support.servers import serving_engine


def _engine() -> ScriptedEngine:
    return ScriptedEngine(lambda prompt, spec, index: Scripted("ok"))


async def test_the_page_and_its_files_are_served_under_ui():
    async with serving_engine(_engine()) as url, httpx.AsyncClient() as http:
        redirect = await http.get(f"{url}/ui")
        assert redirect.status_code == 307 and redirect.headers["location"] == "/ui/"
        page = await http.get(f"{url}/ui/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for name in re.findall(r'(?:src|href)="([\w.]+\.(?:js|css))"', page.text):
            assert (await http.get(f"{url}/ui/{name}")).status_code == 200, name


async def test_with_the_ui_off_it_is_a_404_and_the_api_still_serves():
    async with serving_engine(_engine(), ui=False) as url, httpx.AsyncClient() as http:
        for path in ["/ui", "/ui/", "/ui/app.js", "/ui/index.html"]:
            assert (await http.get(f"{url}{path}")).status_code == 404, path
        assert (await http.get(f"{url}/v1/strategies")).status_code == 200


async def test_api_keys_guard_what_the_page_calls_not_the_page():
    async with serving_engine(_engine(), api_keys=["k1"]) as url, httpx.AsyncClient() as http:
        assert (await http.get(f"{url}/ui/")).status_code == 200
        assert (await http.get(f"{url}/v1/strategies")).status_code == 401
        keyed = await http.get(f"{url}/v1/strategies", headers={"authorization": "Bearer k1"})
        assert keyed.status_code == 200


def test_the_files_fetch_nothing_from_elsewhere():
    """Offline by construction: no absolute URL, no protocol-relative one, in any file
    the page loads, and every module it imports is one of its own files."""
    files = sorted(UI_DIR.iterdir())
    assert {p.suffix for p in files} <= {".html", ".css", ".js"}
    for path in files:
        text = path.read_text()
        assert not re.search(r"https?://|[\"'(]//\w", text), path.name
        for module in re.findall(r'from "\./([\w.]+)"', text):
            assert (UI_DIR / module).is_file(), (path.name, module)


@pytest.mark.parametrize(
    ("argv", "env", "ui"),
    [
        ([], {}, True),
        (["--no-ui"], {}, False),
        ([], {"TTSCALE_UI": "false"}, False),
        ([], {"TTSCALE_UI": "0"}, False),
    ],
)
def test_the_flag_and_the_environment_turn_the_ui_off(monkeypatch, argv, env, ui):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(["serve", *argv])
    assert settings_from_args(args).ui is ui
