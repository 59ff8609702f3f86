"""The lanes are assigned from fixture use, and the guard refuses what a test's markers
do not allow (tests/support/lanes.py)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from ttscale.engine import local_vllm

from .support import lanes


@dataclass
class FakeItem:
    """What the lane hooks read of a collected test."""

    fixturenames: tuple[str, ...]
    markers: list[str] = field(default_factory=list)

    def add_marker(self, name: str) -> None:
        self.markers.append(name)

    def iter_markers(self):
        return [getattr(pytest.mark, name).mark for name in self.markers]


def test_markers_follow_the_fixtures_a_test_uses():
    plain = FakeItem(("tmp_path",))
    engine = FakeItem(("engine", "starts_vllm", "tiny_model_path"))
    server = FakeItem(("vllm_server", "starts_vllm", "subprocess_env"))
    lanes.pytest_collection_modifyitems([plain, engine, server])
    assert (plain.markers, engine.markers, server.markers) == (
        [],
        ["vllm"],
        ["vllm", "subprocess"],
    )


def test_an_unmarked_test_cannot_start_a_program_or_vllm():
    with lanes._lane_guard(FakeItem(())):
        with pytest.raises(lanes.UnmarkedStart, match="subprocess_env"):
            subprocess.run([sys.executable, "-c", "pass"], check=True)
        with pytest.raises(lanes.UnmarkedStart, match="starts_vllm"):
            local_vllm.start_async_llm(None, {})  # type: ignore[arg-type]
    assert subprocess.Popen.__init__ is not None  # restored on the way out


def test_the_guard_lets_a_marked_test_do_what_its_marker_says(subprocess_env):
    with lanes._lane_guard(FakeItem((), ["subprocess"])):
        done = subprocess.run([sys.executable, "-c", "pass"], env=subprocess_env, check=True)
        with pytest.raises(lanes.UnmarkedStart):
            local_vllm.start_async_llm(None, {})  # type: ignore[arg-type]
    assert done.returncode == 0
