"""`edgecut train | prune | bench | server | demo` (torch is imported only inside the handlers)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from edgecut.agent import bench_swap
    from edgecut.demo import cli as demo_cli
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
    service_cli.register(sub)  # adds `server`, and `download` to the bench group above
    demo_cli.register(sub)
