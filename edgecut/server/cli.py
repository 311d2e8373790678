"""`edgecut train | prune | bench | server | demo` (torch is imported only inside the handlers).

These commands need the `server` extra. On an agent-only install (`pip install 'edgecut[agent]'`) they
are not offered, and naming one says which extra to install (edgecut/cli.py).
"""

from __future__ import annotations

import argparse
import importlib.util

COMMANDS = ("train", "prune", "bench", "server", "demo")
# Modules of the server extra that these commands import (pyproject.toml, [server]).
REQUIRES = ("torch", "torch_pruning", "onnx", "sqlalchemy", "matplotlib")
EXTRA_HINT = "pip install 'edgecut[server]'"


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


def register(sub: argparse._SubParsersAction) -> None:
    from edgecut.agent import bench_swap
    from edgecut.demo import cli as demo_cli
    from edgecut.server import app
    from edgecut.server.bench import cli as bench_cli
    from edgecut.server.cut import prune_cli
    from edgecut.server.fleet import cli as service_cli
    from edgecut.server.mtl import train_cli

    train_cli.register(sub)
    prune_cli.register(sub)
    bench = sub.add_parser("bench", help="measure and write the figures in docs/benchmarks.md")
    bench_sub = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)
    bench_cli.register(bench_sub)
    bench_swap.register_bench(bench_sub)
    service_cli.register(sub, app.build_server)  # adds `server`, and `download` to the bench group above
    demo_cli.register(sub)
