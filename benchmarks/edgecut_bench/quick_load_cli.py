"""`edgecut bench quick-load`: argparse only; torch loads in the handler."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgecut.errors import ConfigError
from edgecut_bench import saved_rows
from edgecut_bench.quick_load import TASK_SETS

ROWS = Path("benchmarks/rows/quick-load-rows.pkl")


def register(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser(
        "quick-load",
        help="the fleet's quick build on a quiet and on a busy machine (seconds, steps, Δm) -> docs/benchmarks.md",
    )
    p.add_argument("--checkpoint", type=Path, help="base model (default: the packaged reference)")
    p.add_argument("--cores", type=int, default=2, help="cores kept busy in the loaded builds (default 2)")
    p.add_argument("--macs", type=float, default=0.5, help="MACs budget (default 0.5)")
    p.add_argument(
        "--task-sets",
        default=";".join(",".join(t) for t in TASK_SETS),
        help="task sets, ';' between sets (default %(default)s)",
    )
    p.add_argument("--refine", action="store_true", help="also time refinement 1 under the same load")
    saved_rows.add_arguments(p, ROWS)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgecut_bench import quick_load
    from edgecut_bench.cli import _command, _publish

    if args.render_from:
        res = saved_rows.load(args.render_from, quick_load.QuickLoadResult, "bench quick-load rows")
    else:
        from edgecut.server.paths import PACKAGED_REFERENCE

        if args.cores < 1:
            raise ConfigError(f"--cores must be at least 1, got {args.cores}")
        if not 0 < args.macs <= 1:
            raise ConfigError(f"--macs must be a fraction in (0, 1], got {args.macs}")
        checkpoint = args.checkpoint or PACKAGED_REFERENCE
        if not checkpoint.is_file():
            raise ConfigError(f"no checkpoint at {checkpoint}")
        res = quick_load.run(
            checkpoint,
            args.cores,
            args.macs,
            args.refine,
            _task_sets(args.task_sets),
            progress=lambda text: print(text, file=sys.stderr, flush=True),
        )
        res.command = _command("quick-load")
        saved_rows.keep(res, args.rows)
    _publish(args.out, quick_load.SECTION, quick_load.markdown(res))
    if str(args.out) not in ("", "."):
        from edgecut_bench.doc import write_bullet

        write_bullet(args.out, "Summary", quick_load.LEAD, quick_load.bullet(res))
    return 0


def _task_sets(text: str) -> tuple[tuple[str, ...], ...]:
    sets = tuple(tuple(t.strip() for t in part.split(",") if t.strip()) for part in text.split(";"))
    if not sets or not all(sets):
        raise ConfigError(
            f"--task-sets must be task names, ',' between tasks and ';' between sets, got {text!r}"
        )
    return sets
