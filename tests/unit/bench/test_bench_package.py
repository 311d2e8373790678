"""The benchmarks are a package of their own (benchmarks/edgecut_bench): none of them, nor the tests'
doubles, ship in the runtime wheel; the runtime never imports them; and `edgecut bench` says how to get
them when they are not installed."""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgecut.errors import ConfigError
from edgecut.server.fleet import cli as service_cli
from edgecut_bench import clone

REPO = Path(__file__).resolve().parents[3]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The files of the wheel built from the root pyproject.toml, in a copy of the clone that also holds
    a top-level edgecut_bench (a name the old `edgecut*` include took in)."""
    src = tmp_path_factory.mktemp("clone")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for folder in ("edgecut", "benchmarks", "tests/support"):
        shutil.copytree(REPO / folder, src / folder, ignore=IGNORE)
    (src / "tests" / "__init__.py").touch()
    shutil.copytree(REPO / "benchmarks" / "edgecut_bench", src / "edgecut_bench", ignore=IGNORE)
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, src],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = out.glob("edgecut-*.whl")
    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


@pytest.mark.slow
def test_the_runtime_wheel_ships_no_benchmark_or_test_double(wheel_files: list[str]) -> None:
    assert {"edgecut/cli.py", "edgecut/agent/agent.py", "edgecut/doc_sections.py"} <= set(wheel_files)
    assert {f.split("/")[0] for f in wheel_files} == {"edgecut", "edgecut-0.1.0.dist-info"}
    modules = [f for f in wheel_files if f.endswith(".py")]
    shipped = [f for f in modules if "bench" in f or "onnx_engine" in f or "/paper_" in f]
    assert shipped == []


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_runtime_imports_no_benchmark_and_the_agent_writes_no_docs() -> None:
    wrong = []
    for path in sorted((REPO / "edgecut").rglob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            agent_writes_docs = "agent" in path.parts and name == "edgecut.doc_sections"
            if top in ("edgecut_bench", "tests") or agent_writes_docs:
                wrong.append(f"{path.relative_to(REPO)} imports {name}")
    assert wrong == []


def test_the_fleet_registers_no_bench_command() -> None:
    sub = argparse.ArgumentParser(prog="edgecut").add_subparsers(dest="command")
    service_cli.register(sub)
    assert "server" in sub.choices and "bench" not in sub.choices


WITHOUT_BENCH = (
    "import sys\n"
    "sys.modules['edgecut_bench'] = None  # as on an install without the benchmarks package\n"
    "from edgecut.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _without_bench(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_BENCH, *argv], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.mark.parametrize("argv", [("bench", "swap", "--rate", "5"), ("bench",), ("-v", "bench", "--help")])
def test_bench_without_the_package_says_how_to_get_it(argv: tuple[str, ...]) -> None:
    run = _without_bench(*argv)
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr.strip() == (
        "error: `edgecut bench` needs the benchmarks package (edgecut_bench), which is not installed here: "
        "pip install -e ./benchmarks in an edgecut clone (`make venv` does)"
    )


def test_without_the_package_the_other_commands_work_and_help_names_it() -> None:
    shown = _without_bench("--help")
    assert shown.returncode == 0, shown.stderr
    assert "pip install -e ./benchmarks" in shown.stdout.split("options:")[0]
    assert "usage: edgecut server" in _without_bench("server", "--help").stdout


def test_a_bench_that_needs_the_clone_says_so_when_there_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clone, "REPO", tmp_path)  # an edgecut_bench installed outside a clone
    with pytest.raises(ConfigError, match=r"`edgecut bench fleet` needs tests/support/onnx_engine.py from"):
        clone.support("onnx_engine", "`edgecut bench fleet`")
