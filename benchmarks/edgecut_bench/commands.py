"""Every `edgecut bench ...` subcommand; edgecut/server/cli.py adds them when this package is installed.

Only argparse here: each handler imports what its bench needs (torch included) when it runs.
"""

from __future__ import annotations

import argparse


def register(bench_sub: argparse._SubParsersAction) -> None:
    from edgecut_bench import (
        adapt_agent,
        adapt_cli,
        cli,
        fleet_cli,
        precision_cli,
        quick_load_cli,
        swap,
        widths_cli,
    )

    cli.register(bench_sub)
    swap.register_bench(bench_sub)
    fleet_cli.register(bench_sub)
    precision_cli.register(bench_sub)
    adapt_agent.register(bench_sub)
    adapt_cli.register(bench_sub)
    widths_cli.register(bench_sub)
    quick_load_cli.register(bench_sub)
