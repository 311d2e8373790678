"""`edgecut bench precision`: argparse only; torch and onnxruntime load in the handler."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from edgecut.errors import ConfigError
from edgecut.server.paths import CHECKPOINT_HELP, DEFAULT_DATA_DIR
from edgecut_bench import saved_rows

ROWS = "bench/precision-rows.pkl"  # under DATA_DIR, like the other benches' rows


def register(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser(
        "precision",
        help="edgecut fp32 / static INT8 vs. the full model quantised by onnxruntime -> docs/benchmarks.md",
    )
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--checkpoint", type=Path, help=CHECKPOINT_HELP)
    p.add_argument(
        "--task-sets",
        default="seg,depth;seg,depth,normals",
        help="task sets, ';' between sets (default %(default)s)",
    )
    p.add_argument("--budgets", default="0.5,0.3", help="MACs fractions (default %(default)s)")
    p.add_argument(
        "--seeds",
        default="0,1,2",
        help="calibration seeds, ',' between: which calibration images each INT8 model gets (default %(default)s)",
    )
    p.add_argument(
        "--calib-images",
        type=int,
        default=128,
        help="calibration images per INT8 model (default %(default)s)",
    )
    p.add_argument(
        "--large", type=int, default=128, help="a larger input size to time the same files at (0 = none)"
    )
    p.add_argument("--threads", default="1,2", help="onnxruntime threads to time with (default %(default)s)")
    p.add_argument("--rounds", type=int, default=7, help="timing rounds (default %(default)s)")
    p.add_argument("--runs", type=int, default=30, help="runs of each file per round (default %(default)s)")
    # the engine's lineage, as bench quality sets it up
    p.add_argument(
        "--calib-scenes", type=int, default=512, help="unlabelled calibration scenes of the engine"
    )
    p.add_argument(
        "--val-scenes", type=int, default=256, help="labelled validation scenes every row is scored on"
    )
    p.add_argument(
        "--train-scenes", type=int, default=6000, help="the from-scratch candidate's training scenes"
    )
    p.add_argument("--scratch-epochs", type=float, default=8.0, help="the from-scratch candidate's epochs")
    p.add_argument("--scratch-seconds", type=float, default=240.0, help="... and the time its steps fit in")
    p.add_argument(
        "--recovery-steps", type=int, help="the quick build's recovery steps (default: the engine's)"
    )
    p.add_argument(
        "--refine-steps",
        default="engine",
        help="steps of each refinement, ',' between (default: the engine's)",
    )
    saved_rows.add_arguments(p, ROWS)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgecut_bench import precision, precision_report, saved_rows
    from edgecut_bench.cli import _command, _publish, _quality_config, parse_seeds
    from edgecut_bench.quality import QualityConfig

    if args.render_from:
        res = saved_rows.load(args.render_from, precision.PrecisionResult, "bench precision rows")
    else:
        cfg = precision.PrecisionConfig(
            replace(_quality_config(_lineage(args), QualityConfig), seeds=(0,)),
            seeds=parse_seeds(args.seeds),
            calib_images=_positive("--calib-images", args.calib_images),
            large=_positive("--large", args.large, zero=True),
            threads=_threads(args.threads),
            rounds=_positive("--rounds", args.rounds),
            runs=_positive("--runs", args.runs),
        )
        res = precision.run(cfg)
        res.command = _command("precision")
        rows = args.rows or args.data_dir / ROWS
        saved_rows.keep(res, rows)
    heading, lead = precision_report.titled(res)  # a reference of another input size: its own section
    _publish(args.out, heading, precision_report.markdown(res))
    if str(args.out) not in ("", "."):
        from edgecut_bench.doc import write_bullet

        write_bullet(args.out, "Summary", lead, precision_report.bullet(res))
    return 0


def _lineage(args: argparse.Namespace) -> argparse.Namespace:
    """bench quality's arguments for the engine's lineage (its seeds and cases: one run, every case)."""
    return argparse.Namespace(**{**vars(args), "seeds": "0", "cases": None})


def _positive(flag: str, value: int, zero: bool = False) -> int:
    if value < 0 or (value == 0 and not zero):
        raise ConfigError(f"{flag} must be {'0 or more' if zero else 'positive'}, got {value}")
    return value


def _threads(text: str) -> tuple[int, ...]:
    try:
        threads = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        threads = ()
    if not threads or min(threads) < 1:
        raise ConfigError(f"--threads must be positive integers separated by ',', got {text!r}")
    return threads
