"""`edgecut train | prune | bench | server` (torch is imported only inside the handlers).

`edgecut demo` needs the same extra and is registered beside these by edgecut/cli.py (the demo sits above
the server's packages: they never import it).

These commands need the `server` extra. On an agent-only install (`pip install 'edgecut[agent]'`) they
are not offered, and naming one says which extra to install (edgecut/cli.py). `bench` also needs the
benchmarks package (benchmarks/), and says how to get it when it is missing.
"""

from __future__ import annotations

import argparse
import importlib.util

COMMANDS = ("train", "prune", "bench", "server", "demo")
# Modules of the server extra that these commands import (pyproject.toml, [server]).
REQUIRES = ("torch", "torch_pruning", "onnx", "sqlalchemy", "matplotlib")
EXTRA_HINT = "pip install 'edgecut[server]'"
# The benchmarks are a distribution of their own (benchmarks/pyproject.toml), outside the runtime wheel.
BENCH_PACKAGE = "edgecut_bench"
BENCH_HINT = "pip install -e ./benchmarks in an edgecut clone (`make venv` does)"


def missing_modules() -> list[str]:
    """The server extra's modules that are not installed (found without importing them)."""
    out = []
    for name in REQUIRES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken or half-removed package
            found = False
        if not found:
            out.append(name)
    return out


def bench_installed() -> bool:
    """Whether the benchmarks package is importable (found without importing it)."""
    try:
        return importlib.util.find_spec(BENCH_PACKAGE) is not None
    except (ImportError, ValueError):  # a broken or half-removed package
        return False


def register(sub: argparse._SubParsersAction) -> None:
    from edgecut.server import app, prune_cli
    from edgecut.server.fleet import cli as service_cli
    from edgecut.server.mtl import train_cli

    train_cli.register(sub)
    prune_cli.register(sub)
    if bench_installed():  # imported by name: the runtime never depends on the benchmarks
        bench = sub.add_parser("bench", help="measure and write the figures in docs/benchmarks.md")
        bench_sub = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)
        importlib.import_module(f"{BENCH_PACKAGE}.commands").register(bench_sub)
    else:  # listed in --help; edgecut/cli.py answers `edgecut bench ...` with BENCH_HINT
        sub.add_parser("bench", help=f"benchmarks (not installed here: {BENCH_HINT})")
    service_cli.register(sub, app.build_server)
