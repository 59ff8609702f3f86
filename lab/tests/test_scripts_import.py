"""Every measurement script still imports after the code it measures moves, and the
data files it names exist (the scripts themselves take minutes to hours to run)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem for p in LAB.glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_imports_and_the_paths_it_names_exist(name):
    module = importlib.import_module(f"lab.{name}")
    paths = {k: v for k, v in vars(module).items() if k.isupper() and isinstance(v, Path)}
    missing = {k: str(v) for k, v in paths.items() if not v.exists()}
    assert missing == {}
