"""`edgecut` command line: each side registers its own subcommands; heavy imports happen lazily.

The agent's commands must never import torch, so the server's subcommands import it only when run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from rich.console import Console

from edgecut import __version__
from edgecut.errors import EdgecutError


def build_parser() -> argparse.ArgumentParser:
    from edgecut.agent import cli as agent_cli
    from edgecut.server import cli as server_cli

    parser = argparse.ArgumentParser(
        prog="edgecut", description="Tailor multi-task models to edge devices and deliver them."
    )
    parser.add_argument("--version", action="version", version=f"edgecut {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    server_cli.register(sub)
    agent_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(build_parser(), argv)


def dispatch(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, quiet_level: int = logging.WARNING
) -> int:
    """Parse, set up logging, run the handler; an EdgecutError becomes one message and its exit code."""
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else quiet_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except EdgecutError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
