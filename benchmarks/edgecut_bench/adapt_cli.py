"""`edgecut bench adapt`: argparse only; torch and onnxruntime load in the handler."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edgecut.errors import ConfigError
from edgecut.server.paths import CHECKPOINT_HELP, DEFAULT_DATA_DIR
from edgecut_bench import saved_rows

if TYPE_CHECKING:
    from edgecut_bench.adapt import AdaptResult

ROWS = "bench/adapt-rows.pkl"  # under DATA_DIR, like the other benches' rows
# --quick: one seed, one budget, two shifts, a few images and steps (a smoke test: about a minute)
QUICK = {
    "budgets": "0.5",
    "seeds": "0",
    "shifts": "dark,all",
    "calib_scenes": 64,
    "val_scenes": 32,
    "device_scenes": 32,
    "recovery_steps": 2,
    "adapt_steps": 4,
    "search_steps": 4,
}


def register(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser(
        "adapt",
        help="adapting a tailored model to a device's shifted images from its statistics summary -> "
        "docs/benchmarks.md",
    )
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--checkpoint", type=Path, help=CHECKPOINT_HELP)
    p.add_argument("--task-sets", default="seg,depth", help="task sets, ';' between (default %(default)s)")
    p.add_argument("--budgets", default="0.5,0.3", help="MACs fractions (default %(default)s)")
    p.add_argument("--seeds", default="0,1,2", help="seeds of tailoring, shift noise and adaptation")
    p.add_argument("--shifts", help="shifts of the suite, ',' between (default: every shift of the suite)")
    p.add_argument("--calib-scenes", type=int, default=512, help="the server's clean calibration scenes")
    p.add_argument("--val-scenes", type=int, default=256, help="labelled validation scenes (scored shifted)")
    p.add_argument(
        "--device-scenes", type=int, default=256, help="the scenes a device summarises (and the oracle uses)"
    )
    p.add_argument(
        "--recovery-steps",
        type=int,
        help="recovery steps of (a) and (c) (default: the engine's quick recovery, run in full)",
    )
    p.add_argument("--adapt-steps", type=int, default=40, help="distillation steps of the adaptation")
    p.add_argument("--search-steps", type=int, default=20, help="steps of the camera search")
    p.add_argument(
        "--method",
        default="auto",
        choices=("auto", "adabn", "restyle"),
        help="(b)'s adaptation method (default %(default)s: chosen per device from its summary)",
    )
    p.add_argument("--quick", action="store_true", help="a smoke-test size: " + ", ".join(QUICK))
    saved_rows.add_arguments(p, ROWS)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgecut_bench import adapt_report, saved_rows
    from edgecut_bench.adapt import AdaptResult
    from edgecut_bench.cli import _command, _publish

    if args.render_from:
        res = saved_rows.load(args.render_from, AdaptResult, "bench adapt rows")
    else:
        rows = args.rows or args.data_dir / ROWS
        command = _command("adapt")

        def save(res: AdaptResult) -> None:  # after every case: an interrupted run keeps what it measured
            res.command = command
            saved_rows.save(res, rows)

        res = _run(args, save)
        save(res)
        print(f"rows saved to {rows} (re-render with --render-from {rows})", file=sys.stderr)
    _publish(args.out, adapt_report.SECTION, adapt_report.markdown(res))
    return 0


def _run(args: argparse.Namespace, on_case: Callable[[AdaptResult], None]) -> AdaptResult:
    from edgecut.server.cut.adapt import AdaptOptions
    from edgecut.server.cut.refine import QUICK_RECOVERY
    from edgecut.server.mtl.shifts import SHIFTS
    from edgecut.server.paths import reference_checkpoint
    from edgecut_bench import adapt
    from edgecut_bench.cli import parse_seeds

    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    shifts = tuple(s.strip() for s in (args.shifts or ",".join(SHIFTS)).split(",") if s.strip())
    unknown = [s for s in shifts if s not in SHIFTS]
    if unknown or not shifts:
        raise ConfigError(
            f"--shifts: unknown shift {unknown[0] if unknown else '(none)'!r}: choose from {', '.join(SHIFTS)}"
        )
    for flag in ("calib_scenes", "val_scenes", "device_scenes"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if args.recovery_steps is None:
        args.recovery_steps = QUICK_RECOVERY.steps
    for flag in ("recovery_steps", "adapt_steps", "search_steps"):
        if getattr(args, flag) < 0:
            raise ConfigError(f"--{flag.replace('_', '-')} must be 0 or more, got {getattr(args, flag)}")
    try:
        budgets = tuple(float(b) for b in args.budgets.split(",") if b.strip())
    except ValueError:
        budgets = ()
    if not budgets or not all(0.0 < b <= 1.0 for b in budgets):
        raise ConfigError(
            f"--budgets must be MACs fractions in (0, 1] separated by ',', got {args.budgets!r}"
        )
    task_sets = tuple(
        tuple(t.strip() for t in part.split(",") if t.strip())
        for part in args.task_sets.split(";")
        if part.strip()
    )
    if not task_sets or not all(task_sets):
        raise ConfigError(
            f"--task-sets must be task names, ',' between tasks, ';' between sets: {args.task_sets!r}"
        )
    cfg = adapt.AdaptBenchConfig(
        args.checkpoint or reference_checkpoint(args.data_dir),
        args.data_dir,
        task_sets=task_sets,
        budgets=budgets,
        seeds=parse_seeds(args.seeds),
        shifts=shifts,
        n_calib=args.calib_scenes,
        n_val=args.val_scenes,
        n_device=args.device_scenes,
        recovery_steps=args.recovery_steps,
        adapt=AdaptOptions(method=args.method, steps=args.adapt_steps, search_steps=args.search_steps),
    )
    return adapt.run(cfg, on_case=on_case)
