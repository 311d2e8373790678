"""`edgecut agent ...` subcommands (light imports only: no torch)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    agent = sub.add_parser("agent", help="run and control the on-device agent")
    agent.set_defaults(handler=lambda args: agent.print_help())
