"""`edgecut` command line: each side registers its own subcommands; heavy imports happen lazily.

The agent's commands must never import torch, so the server's subcommands import it only when run, and
on an install without the server extra they are left out (naming one says what to install).

Errors print as one sentence (edgecut/dispatch.py, shared with `python -m edgecut.agent`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape

from edgecut import __version__
from edgecut.dispatch import dispatch


def build_parser() -> argparse.ArgumentParser:
    from edgecut import broker_cli
    from edgecut.agent import cli as agent_cli
    from edgecut.server import cli as server_cli

    missing = server_cli.missing_modules()
    parser = argparse.ArgumentParser(
        prog="edgecut",
        description="Tailor multi-task models to edge devices and deliver them.",
        epilog=(
            f"The server commands ({', '.join(server_cli.COMMANDS)}) need the server extra, which is not "
            f"installed here: {server_cli.EXTRA_HINT}."
            if missing
            else None
        ),
    )
    parser.add_argument("--version", action="version", version=f"edgecut {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if not missing:
        from edgecut.demo import cli as demo_cli

        server_cli.register(sub)
        demo_cli.register(sub)
    agent_cli.register(sub)
    broker_cli.register(sub)  # mosquitto needs no extra; iotcore comes with the server extra
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from edgecut.server import cli as server_cli

    args = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args if not a.startswith("-")), None)
    missing = server_cli.missing_modules() if command in server_cli.COMMANDS else []
    if missing:
        Console(stderr=True).print(
            f"[bold red]error:[/] `edgecut {command}` needs the server extra, which is not installed here "
            f"(no {missing[0]} module): {escape(server_cli.EXTRA_HINT)}",
            highlight=False,
            soft_wrap=True,
        )
        return 2
    if command == "bench" and not server_cli.bench_installed():
        Console(stderr=True).print(
            f"[bold red]error:[/] `edgecut bench` needs the benchmarks package ({server_cli.BENCH_PACKAGE}), "
            f"which is not installed here: {escape(server_cli.BENCH_HINT)}",
            highlight=False,
            soft_wrap=True,
        )
        return 2
    return dispatch(build_parser(), args)


if __name__ == "__main__":
    sys.exit(main())
