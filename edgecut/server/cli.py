"""`edgecut train | prune | bench | server | demo` (torch is imported only inside the handlers)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from edgecut.server.mtl import train_cli

    train_cli.register(sub)
