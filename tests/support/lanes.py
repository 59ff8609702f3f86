"""The test lanes, as a pytest plugin (`-p tests.support.lanes` in pyproject.toml, so it
covers `tests/` and `lab/tests/` alike).

Two markers sort the tests into lanes, assigned from the fixtures a test uses (directly
or through other fixtures), never by hand:
- `vllm`: the test starts vLLM, in process or as a server: it uses `starts_vllm`;
- `subprocess`: the test starts a program (a server, a router, a build): it uses
  `subprocess_env`.
`make test-fast` runs the tests with neither. A guard holds the markers to the truth: a
test that starts vLLM or a program without its marker fails, in every lane, with a line
that says which fixture to use (a test marked `vllm` may start programs: vLLM runs some
of its own).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from ttscale.engine import local_vllm, pooling

LANE_FIXTURES = {"vllm": "starts_vllm", "subprocess": "subprocess_env"}
"""Marker -> the fixture whose use assigns it."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = getattr(item, "fixturenames", ())
        for marker, fixture in LANE_FIXTURES.items():
            if fixture in used:
                item.add_marker(marker)


class UnmarkedStart(AssertionError):
    """A test started vLLM or a program without the fixture that marks it."""


@contextlib.contextmanager
def _lane_guard(item: pytest.Item) -> Iterator[None]:
    """While `item` is set up and run, refuse what its markers do not allow."""
    marked = {mark.name for mark in item.iter_markers()}
    patches = contextlib.ExitStack()
    with patches:
        if "vllm" not in marked:
            for module in (local_vllm, pooling):
                patches.enter_context(_refusing(module, "start_async_llm", "vllm"))
        if not marked & {"subprocess", "vllm"}:  # vLLM runs programs of its own
            patches.enter_context(_refusing(subprocess.Popen, "__init__", "subprocess"))
        yield


@contextlib.contextmanager
def _refusing(owner: Any, name: str, marker: str) -> Iterator[None]:
    original = getattr(owner, name)

    def refuse(*args: Any, **kwargs: Any) -> None:
        fixture = LANE_FIXTURES[marker]
        raise UnmarkedStart(f"this test starts what `{marker}` marks: use the `{fixture}` fixture")

    setattr(owner, name, refuse)
    try:
        yield
    finally:
        setattr(owner, name, original)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    with _lane_guard(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    with _lane_guard(item):
        return (yield)


@pytest.fixture(scope="session")
def starts_vllm() -> None:
    """Used by every test and fixture that starts vLLM (in process or as a server), so
    that the `vllm` marker follows."""


@pytest.fixture(scope="session")
def subprocess_env() -> Iterator[dict[str, str]]:
    """Environment for server subprocesses: offline, CPU defaults, unbuffered output."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    yield env
