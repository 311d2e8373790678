"""`edgecut prune`: tailor the trained model to some tasks and a budget, write ONNX + metadata."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from edgecut.errors import ConfigError
from edgecut.server.cliopts import add_data, add_floor, add_model
from edgecut.server.paths import CHECKPOINT_HELP, DEFAULT_DATA_DIR, reference_checkpoint

if TYPE_CHECKING:
    from rich.console import Console

    from edgecut.model_meta import ModelMeta
    from edgecut.server.mtl.tasks import TaskSpec
    from edgecut.server.spec import BuiltArtifact


def register(sub: argparse._SubParsersAction) -> None:
    from edgecut.server.cut.methods import DEFAULT_METHOD, METHODS

    p = sub.add_parser("prune", help="tailor the model to some tasks and a budget; write ONNX + metadata")
    p.add_argument("--tasks", required=True, help="comma-separated tasks to keep, e.g. seg,depth")
    p.add_argument(
        "--budget",
        required=True,
        help="macs=0.3 | params=0.4 (fractions of the selected-task model) | max_macs=2e7 | max_params=1e5",
    )
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument(
        "--checkpoint",
        type=Path,
        help=CHECKPOINT_HELP,
    )
    p.add_argument(
        "--out", type=Path, default=Path("tailored.onnx"), help="ONNX file to write (+ .json sidecar)"
    )
    p.add_argument(
        "--method", default=DEFAULT_METHOD, choices=sorted(METHODS), help="criterion + fusion preset"
    )
    p.add_argument(
        "--recover-steps", type=int, default=200, help="distillation steps after pruning (0 = none)"
    )
    p.add_argument(
        "--recover-seconds",
        type=float,
        default=None,
        help="optional time limit of the recovery (default: none, the steps decide; a limit makes the "
        "result depend on the machine's load, and the output says when it cut the steps short)",
    )
    p.add_argument(
        "--priority", action="append", default=[], metavar="TASK=W", help="task weight in the fusion"
    )
    add_model(p)
    add_data(p)
    add_floor(p)
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "int8"),
        default="auto",
        help="auto: write the fp32 model and, beside it (NAME.int8.onnx), a static INT8 one when every task "
        "stays within 0.5 point of fp32 on the validation set; int8: write only that (fp32 when it fails "
        "the check, with the reason); fp32: no quantisation",
    )
    p.add_argument("--int8", action="store_true", help=argparse.SUPPRESS)  # replaced by --precision
    p.set_defaults(handler=run)


def _priorities(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        task, sep, raw = item.partition("=")
        try:
            out[task.strip()] = float(raw)
        except ValueError:
            raise ConfigError(f"bad --priority {item!r}: expected TASK=WEIGHT, e.g. seg=2") from None
        if not sep or out[task.strip()] <= 0:
            raise ConfigError(f"bad --priority {item!r}: expected TASK=WEIGHT with a positive weight")
    return out


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rich.console import Console

    from edgecut.server.cut.methods import METHODS
    from edgecut.server.cut.recover import RecoveryOptions
    from edgecut.server.cut.tailor import TailorOptions
    from edgecut.server.engine import load_engine
    from edgecut.server.mtl.metrics import delta_m
    from edgecut.server.spec import Budget, BuildSpec

    if args.int8:
        raise ConfigError(
            "--int8 is gone (its dynamic quantisation ran slower than fp32): use --precision int8 for a "
            "static INT8 model checked per task, or --precision auto for both"
        )
    if args.recover_steps < 0:
        raise ConfigError("--recover-steps must be >= 0")
    if args.recover_seconds is not None and args.recover_seconds <= 0:
        raise ConfigError("--recover-seconds must be positive (leave it out for no time limit)")
    console = Console()
    ckpt = args.checkpoint or reference_checkpoint(args.data_dir)
    engine = load_engine(
        ckpt,
        args.data_dir,
        args.calib_data,
        val_data=args.val_data,
        model=args.model,
        image_scale=args.image_scale,
        min_delta_m=args.min_delta_m,
    )
    console.print(f"calibrating on {engine.calibrated_on}", highlight=False)
    m = METHODS[args.method]
    recovery = (
        RecoveryOptions(steps=args.recover_steps, seconds=args.recover_seconds)
        if args.recover_steps
        else None
    )
    engine.options = replace(
        TailorOptions(),
        criterion=m.criterion,
        fusion=m.fusion,
        target=m.target,
        min_channels=m.min_channels,
        recovery=recovery,
    )
    spec = BuildSpec.create(
        args.tasks.split(","),
        Budget.parse(args.budget),
        _priorities(args.priority),
        recover=recovery is not None,
    )
    engine.validate(spec)
    if args.precision == "fp32":
        engine.quant = None
    from edgecut.server.progress import progress_bar

    with progress_bar(f"tailoring {','.join(spec.tasks)}", total=100) as advance:
        done = [0.0]

        def progress(stage: str, fraction: float, detail: str) -> None:
            step = max(0.0, fraction * 100 - done[0])
            done[0] += step
            advance(step, stage="int8" if detail.startswith("int8") else stage)

        built = engine.build(spec, progress)
    written = write_outputs(built, args.out, args.precision)
    built.cleanup()
    meta = built.meta
    quality = (
        f"Δm vs original {delta_m(meta.metrics, meta.reference_metrics, engine.base.task_specs):+.2f}%"
        if meta.metrics
        else "no validation data (give --val-data FOLDER for quality figures)"
    )
    console.print(
        f"[bold]tailored model[/]: tasks {','.join(meta.tasks)} | params {meta.params / 1e3:.1f}k "
        f"(full {meta.full_params / 1e3:.1f}k) | MACs {meta.macs / 1e6:.2f}M (full {meta.full_macs / 1e6:.2f}M) | "
        f"{quality} | ONNX max|Δ| {meta.onnx_max_abs_diff:.2e} | {built.extras['seconds']:.1f} s"
    )
    print_precisions(console, written, engine.base.input_size, engine.base.task_specs)
    extras = built.extras
    cut = extras.get("recovery_steps", 0.0) < extras.get("recovery_steps_asked", 0.0)
    for note in built.notes:  # "recovery: 200 steps", or "recovery: 116 of 200 steps (120 s time limit)"
        if "recovery:" in note and cut:
            note = f"[yellow]{note}: stopped by --recover-seconds[/]"
        console.print(note, highlight=False)
    if args.precision == "int8" and not built.variants:
        console.print(f"[yellow]{args.out} is fp32: {meta.precision_note}[/]", highlight=False)
    return 0


def write_outputs(built: BuiltArtifact, out: Path, precision: str) -> list[tuple[Path, ModelMeta]]:
    """The files `--precision` asks for, each with its JSON sidecar (metadata, sha256, size)."""
    variant = built.variants[0] if built.variants else None
    files = [(built.onnx_path, built.meta, out)]
    if variant is not None and precision == "int8":
        files = [(variant.onnx_path, variant.meta, out)]
    elif variant is not None and precision == "auto":
        files.append((variant.onnx_path, variant.meta, out.with_name(out.stem + ".int8.onnx")))
    from edgecut.server.cut.export import sha256_file

    written = []
    for src, meta, dst in files:
        dst.parent.mkdir(parents=True, exist_ok=True)
        src.replace(dst)
        doc = {**json.loads(meta.to_json()), "sha256": sha256_file(dst), "size_bytes": dst.stat().st_size}
        dst.with_suffix(".json").write_text(json.dumps(doc, indent=2))
        written.append((dst, meta))
    return written


def print_precisions(
    console: Console, written: list[tuple[Path, ModelMeta]], size: int, specs: dict[str, TaskSpec]
) -> None:
    """One line per file: precision, Δm and each task's change, ms (timed here in turns), MB."""
    from edgecut.server.mtl.metrics import delta_m
    from edgecut.server.ort_latency import interleaved_latency_ms

    ms = interleaved_latency_ms([p for p, _ in written], size)
    for (path, meta), t in zip(written, ms, strict=True):
        tasks = ", ".join(f"{k} {v:+.2f}" for k, v in sorted(meta.task_changes.items()))
        quality = (
            f"Δm {delta_m(meta.metrics, meta.reference_metrics, specs):+.2f}% ({tasks})"
            if meta.metrics
            else "no quality figures"
        )
        vs = f" | {meta.precision_note}" if meta.precision == "int8" else ""
        console.print(
            f"{path}: {meta.precision} | {quality}{vs} | {t:.3f} ms (batch 1, 1 thread, timed in turns "
            f"here) | {path.stat().st_size / 1e6:.2f} MB",
            highlight=False,
        )
