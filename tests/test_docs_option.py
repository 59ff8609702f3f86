"""`--no-docs` / `TTSCALE_DOCS=false`: the API description is not served at all."""

from __future__ import annotations

import httpx
import pytest

from ttscale.cli.main import build_parser
from ttscale.server.cli import settings_from_args
from ttscale.server.config import Settings

from .support.fakes import Scripted, ScriptedEngine
from .support.servers import serving_engine

DOC_PATHS = ["/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"]


def _engine() -> ScriptedEngine:
    return ScriptedEngine(lambda prompt, spec, index: Scripted("ok"))


async def test_with_docs_off_the_description_is_a_404_and_the_api_still_serves():
    async with serving_engine(_engine(), docs=False) as url, httpx.AsyncClient() as http:
        for path in DOC_PATHS:
            assert (await http.get(f"{url}{path}")).status_code == 404, path
        assert (await http.get(f"{url}/health")).status_code == 200
        models = await http.get(f"{url}/v1/models")
        assert models.status_code == 200 and models.json()["data"][0]["id"] == "scripted"


async def test_by_default_the_description_is_served():
    async with serving_engine(_engine()) as url, httpx.AsyncClient() as http:
        assert (await http.get(f"{url}/docs")).status_code == 200
        assert (await http.get(f"{url}/redoc")).status_code == 200
        schema = (await http.get(f"{url}/openapi.json")).json()
        assert "/v1/chat/completions" in schema["paths"]


@pytest.mark.parametrize(
    ("argv", "env", "docs"),
    [
        ([], {}, True),
        (["--no-docs"], {}, False),
        ([], {"TTSCALE_DOCS": "false"}, False),
        ([], {"TTSCALE_DOCS": "0"}, False),
    ],
)
def test_the_flag_and_the_environment_turn_the_docs_off(monkeypatch, argv, env, docs):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(["serve", *argv])
    assert settings_from_args(args).docs is docs


def test_the_flag_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("TTSCALE_DOCS", "true")
    args = build_parser().parse_args(["serve", "--no-docs"])
    assert settings_from_args(args).docs is False
    assert Settings().docs is True
