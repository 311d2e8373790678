"""`edgecut bench widths`: argparse only; torch and onnxruntime load in the handler."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgecut.errors import ConfigError
from edgecut_bench import saved_rows

ROWS = Path("benchmarks/rows/widths-rows.pkl")


def register(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser(
        "widths", help="what a layer width costs on this CPU in fp32 and static INT8 -> docs/benchmarks.md"
    )
    p.add_argument(
        "--widths",
        default="8,12,16,20,24,28,32,40,48,56,64",
        help="widths to time, ',' between (default %(default)s)",
    )
    p.add_argument("--size", type=int, default=32, help="feature map side (default %(default)s)")
    p.add_argument("--rounds", type=int, default=7, help="timing rounds (default %(default)s)")
    p.add_argument("--runs", type=int, default=40, help="runs of each file per round (default %(default)s)")
    saved_rows.add_arguments(p, ROWS)
    p.set_defaults(handler=run)


def _widths(text: str) -> list[int]:
    try:
        widths = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        widths = []
    if not widths or widths[0] < 1:
        raise ConfigError(f"--widths must be positive integers separated by ',', got {text!r}")
    return widths


def run(args: argparse.Namespace) -> int:
    from edgecut_bench import widths
    from edgecut_bench.cli import _command, _publish

    if args.render_from:
        res = saved_rows.load(args.render_from, widths.WidthsResult, "bench widths rows")
    else:
        for flag, value in (("--size", args.size), ("--rounds", args.rounds), ("--runs", args.runs)):
            if value < 1:
                raise ConfigError(f"{flag} must be positive, got {value}")
        res = widths.run(
            _widths(args.widths),
            args.size,
            rounds=args.rounds,
            runs=args.runs,
            progress=lambda text: print(text, file=sys.stderr, flush=True),
        )
        res.command = _command("widths")
        saved_rows.keep(res, args.rows)
    _publish(args.out, widths.SECTION, widths.markdown(res))
    return 0
