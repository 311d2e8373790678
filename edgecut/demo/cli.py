"""`edgecut demo`: the whole system on this machine (module scope stays light: no torch, no grpc)."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from types import FrameType

from edgecut.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run broker, fleet server and agents here: requests, builds, downloads, hot-swaps, a table",
        description="Start a real MQTT broker, the fleet server and N real agent processes with different "
        "tasks and device classes; drive inference on each, change one device's tasks mid-run, print the "
        "final table. Exit code 0 only when every agent serves a model for its tasks, no request failed "
        "and the task change took effect.",
    )
    p.add_argument("--data-dir", type=Path, default=Path(".edgecut"), help="models, scenes, build cache")
    p.add_argument(
        "--agents",
        type=int,
        default=4,
        help="agents to run (default 4; >= 1), plus the dim garage (issue 31)",
    )
    p.add_argument("--duration", type=float, default=60.0, help="seconds of inference at least (default 60)")
    p.add_argument("--quick", action="store_true", help="tiny model trained in seconds (tests, smoke runs)")
    p.add_argument(
        "--broker",
        choices=("auto", "mosquitto", "iotcore"),
        help="MQTT broker (default $EDGECUT_EMBEDDED_BROKER, else mosquitto when installed, else iotcore)",
    )
    p.add_argument("--rate", type=float, default=5.0, help="Infer requests per second per agent (default 5)")
    p.add_argument(
        "--timeout", type=float, default=900.0, help="give up when the devices are not done after this (s)"
    )
    p.add_argument(
        "--reuse-builds",
        action="store_true",
        help="keep built models in DATA_DIR/demo between runs: a rerun gets them as cache hits",
    )
    p.add_argument(
        "--recovery-steps", type=int, help="distillation steps per build (default 60; 20 with --quick)"
    )
    p.add_argument(
        "--refine-steps",
        help="distillation steps of each refinement after the quick model, comma-separated "
        "(default 120; 30 with --quick; 'none' = quick models only)",
    )
    p.add_argument("--json", type=Path, help="also write the result (table facts, timings) as JSON here")
    p.add_argument("--bench-doc", type=Path, help="write the timings into this markdown file's Demo section")
    p.add_argument("--keep", action="store_true", help="keep the run's temp dir (agent logs and state)")
    p.add_argument(
        "--http",
        default="127.0.0.1:8080",
        help="the fleet dashboard's host:port (default 127.0.0.1:8080, any free port when taken; 'off' disables)",
    )
    p.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    if args.agents < 1:
        raise ConfigError(f"--agents must be at least 1, got {args.agents}")
    if args.duration <= 0 or args.rate <= 0 or args.timeout <= 0:
        raise ConfigError("--duration, --rate and --timeout must be positive")
    if args.recovery_steps is not None and args.recovery_steps < 0:
        raise ConfigError("--recovery-steps must be 0 or more")

    refine_steps = _refine_steps(args.refine_steps)

    from rich.console import Console

    from edgecut.broker import chosen_broker

    from .report import finish
    from .run import Demo, DemoOptions

    def _on_term(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # `kill` stops the demo like Ctrl-C: through the same cleanup

    signal.signal(signal.SIGTERM, _on_term)
    # A background job of a non-interactive shell starts with SIGINT ignored, and Python keeps it so;
    # the demo is stopped with Ctrl-C (or `kill -INT`) however it was started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    opts = DemoOptions(
        data_dir=args.data_dir,
        agents=args.agents,
        duration=args.duration,
        quick=args.quick,
        broker=args.broker or chosen_broker(),
        rate=args.rate,
        timeout=args.timeout,
        reuse_builds=args.reuse_builds,
        recovery_steps=args.recovery_steps,
        refine_steps=refine_steps,
        keep=args.keep,
        http="" if args.http == "off" else args.http,
    )
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 150  # logs and pipes: rich would assume 80 columns and squash the table
    result = Demo(opts, console).run()
    return finish(result, opts, console, args.json, args.bench_doc)


def _refine_steps(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    if text.strip().lower() in ("none", "0", ""):
        return ()
    try:
        steps = tuple(int(p) for p in text.split(","))
    except ValueError:
        steps = ()
    if not steps or min(steps) < 1:
        raise ConfigError(
            f"--refine-steps {text!r}: expected positive step counts like 120 or 120,240, or none"
        )
    return steps
