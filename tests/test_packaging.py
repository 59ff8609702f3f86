"""ttscale installs as one distribution under the `ttscale.` namespace, with its data.

The install test builds a wheel of this checkout, installs it (without dependencies)
into a fresh virtual environment outside the repository that borrows this environment's
third-party packages, and runs the installed `ttscale` command from another directory:
what a user of `pip install .` gets, not what the source tree happens to provide.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("cli", "engine", "verifiers", "strategies", "server", "benchmarks")
GENERIC_NAMES = {*LAYERS, "tests", "scripts", "docker"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory, subprocess_env) -> Path:
    """A fresh venv with ttscale installed from a wheel of this checkout."""
    root = tmp_path_factory.mktemp("install")
    wheels = root / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(wheels), str(REPO)],
        check=True, cwd=root,
    )  # fmt: skip
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = _site_packages(venv)
    # Third-party packages come from this environment (a plain path entry: its .pth files,
    # among them the editable finder of the checkout, are not run).
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(wheels.glob("ttscale-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True, cwd=root,
    )  # fmt: skip
    return venv


def _site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "ttscale"), *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_only_the_ttscale_namespace_is_installed(installed):
    site = _site_packages(installed)
    top_level = {p.name for p in site.iterdir() if p.is_dir() and not p.name.endswith("-info")}
    assert "ttscale" in top_level
    assert not top_level & GENERIC_NAMES
    package = site / "ttscale"
    assert {p.name for p in package.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(
        LAYERS
    )
    assert (package / "benchmarks" / "data" / "gsm8k.jsonl").is_file()
    shipped_ui = {p.name for p in (package / "server" / "ui").iterdir()}
    assert shipped_ui == {p.name for p in (REPO / "server" / "ui").iterdir()}
    assert "index.html" in shipped_ui


def test_the_wheel_carries_the_product_not_the_lab_or_test_support(installed):
    """Measurement scripts live in lab/ and test helpers in tests/support/: neither
    ships, under any name."""
    package = _site_packages(installed) / "ttscale"
    shipped = {p.relative_to(package).with_suffix("").as_posix() for p in package.rglob("*.py")}
    lab_scripts = {p.stem for p in (REPO / "lab").glob("*.py")} - {"__init__"}
    support = {p.stem for p in (REPO / "tests" / "support").glob("*.py")} - {"__init__"}
    assert lab_scripts and support
    assert not {name.rsplit("/", 1)[-1] for name in shipped} & (lab_scripts | support)
    assert not any(name.startswith(("lab", "tests")) for name in shipped)
    assert not (package / "benchmarks" / "results").exists()


def test_the_installed_command_runs_outside_the_repository(installed, tmp_path):
    helped = _run(installed, "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "serve" in helped.stdout and "bench" in helped.stdout
    code = "import ttscale.server; print(ttscale.server.__file__)"
    where = subprocess.run(
        [str(installed / "bin" / "python"), "-c", code],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(installed)


def test_the_installed_benchmark_finds_its_datasets(installed, tmp_path):
    dry = _run(installed, "bench", "run", "--dataset", "gsm8k", "--limit", "1", "--dry-run",
               cwd=tmp_path)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "1 problems x 2 settings" in dry.stderr
    assert "gsm8k/" in dry.stdout  # the problem ids it would run


def _imported_top_level_modules() -> set[str]:
    names: set[str] = set()
    for layer in LAYERS:
        for path in (REPO / layer).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"ttscale", "__future__"}


def _declared_distributions() -> set[str]:
    declared = set()
    for requirement in importlib.metadata.requires("ttscale") or []:
        name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
        declared.add(name.lower().replace("_", "-"))
    return declared


def test_every_imported_third_party_package_is_declared():
    owners = importlib.metadata.packages_distributions()
    declared = _declared_distributions()
    undeclared = {
        module: owners.get(module)
        for module in _imported_top_level_modules()
        if not {d.lower().replace("_", "-") for d in owners.get(module, [])} & declared
    }
    assert undeclared == {}
