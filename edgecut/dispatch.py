"""Run a parsed `edgecut` command: set up logging, call its handler, turn errors into one sentence.

Shared by the root CLI (edgecut/cli.py) and the agent's own entry point (`python -m edgecut.agent`), so
the device's commands need nothing above the wire-contract floor (docs/architecture.md).

An `EdgecutError` is a user's mistake and prints as one sentence with its exit code; anything else is
unexpected and prints as one sentence too (exit 1), with the traceback only under -v.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape

from edgecut.errors import EdgecutError


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
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        return 130
    except Exception as exc:  # a bug (ours or in a user's model code): one sentence, traceback with -v
        logging.getLogger("edgecut").debug("unexpected error", exc_info=True)
        lines = str(exc).strip().splitlines()
        hint = "" if args.verbose else " (rerun with -v for the traceback)"
        Console(stderr=True).print(
            f"[bold red]error:[/] unexpected {type(exc).__name__}: {escape(lines[0] if lines else '')}{hint}",
            highlight=False,
            soft_wrap=True,
        )
        return 1
