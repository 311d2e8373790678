"""`edgecut bench prune` (and the other engine benchmarks); torch is imported in the handlers only."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgecut.errors import ConfigError
from edgecut.server.cliopts import add_data, add_model
from edgecut.server.paths import (
    CHECKPOINT_HELP,
    DEFAULT_DATA_DIR,
    reference_checkpoint,
    scenes_cache,
    trained_reference,
)
from edgecut.server.spec import NO_FLOOR

if TYPE_CHECKING:
    from edgecut_bench.generality import GeneralityResult
    from edgecut_bench.quality import QualityConfig


def register(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("prune", help="CUT vs. baselines: per-task metrics, Δm, params, MACs, latency")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument(
        "--checkpoint",
        type=Path,
        help=CHECKPOINT_HELP,
    )
    p.add_argument("--tasks", default="seg,depth")
    add_model(p)
    add_data(p)
    p.add_argument("--levels", default="0.3,0.5,0.7,0.9", help="shares of params removed")
    p.add_argument("--methods", default="random,l1,garg-taylor,snip-union,disparse-pt,cut-vote,cut-mean")
    p.add_argument("--recovery-steps", type=int, default=100)
    p.add_argument("--quick", action="store_true", help="2 methods x 2 levels, tiny data (smoke test)")
    p.add_argument(
        "--out", type=Path, default=Path("docs/benchmarks.md"), help="markdown to update ('' = none)"
    )
    p.add_argument("--plot", type=Path, default=Path("docs/prune_delta_m.png"), help="'' = none")
    p.add_argument("--section", default="Pruning: CUT vs. baselines")
    p.set_defaults(handler=run_prune)

    t = bench_sub.add_parser("tailor", help="end-to-end build time without recovery (score, prune, export)")
    t.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    t.add_argument(
        "--checkpoint",
        type=Path,
        help=CHECKPOINT_HELP,
    )
    t.add_argument("--repeats", type=int, default=3, help="builds per task set; the median is the figure")
    t.add_argument(
        "--task-sets",
        default=";".join(",".join(c) for c in TAILOR_CASES),
        help="task sets, ';' between sets (default %(default)s)",
    )
    t.add_argument(
        "--out", type=Path, default=Path("docs/benchmarks.md"), help="markdown to update ('' = none)"
    )
    t.set_defaults(handler=run_tailor)

    m = bench_sub.add_parser(
        "model", help="the reference model's metrics vs. trivial baselines, training time"
    )
    m.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    m.add_argument("--retrain", action="store_true", help="train again (timed) even if the model exists")
    m.add_argument(
        "--checkpoint",
        type=Path,
        help="another reference (e.g. one trained with edgecut train --image-size 128): its own section, "
        "named by its input size (default: the benchmarks' reference)",
    )
    m.add_argument(
        "--compare",
        type=Path,
        nargs="*",
        default=[],
        metavar="CKPT",
        help="other checkpoints (e.g. from scratch: edgecut train --tasks seg,depth) scored against the "
        "reference on the same validation scenes",
    )
    m.add_argument(
        "--out", type=Path, default=Path("docs/benchmarks.md"), help="markdown to update ('' = none)"
    )
    m.set_defaults(handler=run_model)

    g = bench_sub.add_parser(
        "generality",
        help="the gallery architectures trained on a folder and tailored; per-MAC vs plain ranking",
    )
    g.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    g.add_argument(
        "--checkpoint", type=Path, help="reference model for the ranking comparison; " + CHECKPOINT_HELP
    )
    g.add_argument("--retrain", action="store_true", help="train the gallery models again even if cached")
    g.add_argument("--quick", action="store_true", help="one architecture on tiny settings (smoke test)")
    g.add_argument("--architectures", help="comma-separated subset of the gallery (default: all)")
    g.add_argument(
        "--ranking", action="store_true", help="also compare per-MAC and plain ranking on the reference model"
    )
    g.add_argument(
        "--all-pairs", action="store_true", help="seg+depth, count+largest and slant+count at every budget"
    )
    add_seeds(g, None, "0,1,2; --quick: 0")
    g.add_argument(
        "--rows",
        type=Path,
        help="where the run's rows are saved for --render-from (default: DATA_DIR/bench/generality-rows.pkl)",
    )
    g.add_argument(
        "--render-from",
        type=Path,
        nargs="+",
        metavar="ROWS",
        help="no run: rewrite the section from rows earlier runs saved (several files: one section from "
        "runs of other seeds or architectures, e.g. a full run split over CI jobs)",
    )
    g.add_argument(
        "--out", type=Path, default=Path("docs/benchmarks.md"), help="markdown to update ('' = none)"
    )
    g.set_defaults(handler=run_generality)

    q = bench_sub.add_parser(
        "quality",
        help="quick + refined models vs. from-scratch and Torch-Pruning baselines -> docs/benchmarks.md",
    )
    q.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    q.add_argument("--checkpoint", type=Path, help=CHECKPOINT_HELP)
    q.add_argument(
        "--task-sets",
        default="seg,depth;seg,depth,normals",
        help="task sets, ';' between sets (default %(default)s)",
    )
    q.add_argument("--budgets", default="0.5,0.3", help="MACs fractions (default %(default)s)")
    q.add_argument(
        "--cases",
        help="run only these cases instead of every task set at every budget, e.g. "
        "'seg,depth@0.5;seg,depth,normals@0.3' (a full run split over CI jobs: see --render-from)",
    )
    add_seeds(q)
    q.add_argument(
        "--scratch-epochs",
        type=float,
        default=8.0,
        help="epochs of the engine's from-scratch candidate (default %(default)s, the engine's own)",
    )
    q.add_argument(
        "--scratch-seconds",
        type=float,
        default=240.0,
        help="time the from-scratch candidate's steps are fitted to (default %(default)s, the server's)",
    )
    q.add_argument(
        "--train-scenes",
        type=int,
        default=6000,
        help="labelled scenes the from-scratch models train on",
    )
    q.add_argument(
        "--calib-scenes", type=int, default=512, help="unlabelled calibration scenes of the engine"
    )
    q.add_argument(
        "--val-scenes", type=int, default=256, help="labelled validation scenes every row is scored on"
    )
    q.add_argument(
        "--recovery-steps", type=int, help="the quick build's recovery steps (default: the engine's)"
    )
    q.add_argument(
        "--refine-steps",
        default="engine",
        help="steps of each refinement, ',' between (default %(default)s: the engine's own schedules)",
    )
    q.add_argument(
        "--out", type=Path, default=Path("docs/benchmarks.md"), help="markdown to update ('' = none)"
    )
    q.add_argument("--plot", type=Path, default=Path("docs/quality_delta_m.png"))
    q.add_argument(
        "--rows",
        type=Path,
        help="where the run's rows are saved for --render-from (default: DATA_DIR/bench/quality-rows.pkl)",
    )
    q.add_argument(
        "--render-from",
        type=Path,
        nargs="+",
        metavar="ROWS",
        help="no run: rewrite the section and plot from rows earlier runs saved (several files: one "
        "section from runs of other seeds or cases, e.g. a full run split over CI jobs)",
    )
    q.set_defaults(handler=run_quality)

    from edgecut_bench import paper_cli  # argparse only; torch loads in its handler

    paper_cli.register(bench_sub)

    a = bench_sub.add_parser(
        "arm64",
        help="the agent on aarch64 (a Debian root under qemu-user) serving a tailored model -> docs/benchmarks.md",
        description="Needs root, debootstrap and qemu-user-static; builds the root once (deploy/arm64/).",
    )
    a.add_argument("--root", type=Path, default=Path("/var/tmp/edgecut-arm64/root"), help="the aarch64 root")
    a.add_argument("--qemu-cpu", default="cortex-a72", help="cortex-a72 = Pi 4, cortex-a57 = Jetson Nano")
    a.add_argument("--tasks", default="seg,depth")
    a.add_argument("--device-class", default="rpi4")
    a.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    a.add_argument("--checkpoint", type=Path, help=CHECKPOINT_HELP)
    a.add_argument("--timeout", type=float, default=1800.0, help="seconds for the agent to serve a model")
    a.add_argument(
        "--stall-s",
        type=float,
        default=300.0,
        help="end the run when a stage makes no progress this long (building the root: no output or "
        "log line; the agent: no log line, no status change, no build running); a refused offer ends "
        "it within 20 s (default %(default)s)",
    )
    a.add_argument(
        "--recovery-steps",
        type=int,
        default=20,
        help="recovery steps of the server's build (default %(default)s; 0 = the smallest build)",
    )
    a.add_argument(
        "--out", type=Path, default=Path("docs/benchmarks.md"), help="markdown to update ('' = none)"
    )
    a.set_defaults(handler=run_arm64)

    z = bench_sub.add_parser(
        "sizing",
        help="builds per hour per core and device messages per second of one server replica -> docs/benchmarks.md",
    )
    z.add_argument("--devices", type=int, default=1000, help="simulated devices (default 1000)")
    z.add_argument("--builds", type=int, default=3, help="distinct builds to time, 1-3 (default 3)")
    z.add_argument("--registry-url", default="", help="e.g. postgresql://user@host/db (default: SQLite)")
    z.add_argument(
        "--recovery-steps", type=int, help="recovery steps per build (default: the server's; 0 = a smoke run)"
    )
    z.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    z.add_argument("--checkpoint", type=Path, help=CHECKPOINT_HELP)
    z.add_argument(
        "--out", type=Path, default=Path("docs/benchmarks.md"), help="markdown to update ('' = none)"
    )
    z.set_defaults(handler=run_sizing)


def run_arm64(args: argparse.Namespace) -> int:
    import os

    from edgecut_bench import arm64

    if os.geteuid() != 0:
        raise ConfigError("bench arm64 needs root (debootstrap, chroot and mounts in the aarch64 root)")
    if args.stall_s <= 0 or args.timeout <= 0:
        raise ConfigError("--timeout and --stall-s must be positive")
    if args.recovery_steps < 0:
        raise ConfigError("--recovery-steps must be 0 or more")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    result = arm64.Arm64Result(qemu_cpu=args.qemu_cpu, tasks=tasks, device_class=args.device_class)
    root = args.root.resolve()
    root.parent.mkdir(parents=True, exist_ok=True)
    arm64.build_root(root, result, args.stall_s)
    arm64.probe_root(root, result)
    from edgecut.server.engine import load_engine

    ckpt = args.checkpoint or reference_checkpoint(args.data_dir)
    engine = load_engine(
        ckpt, args.data_dir, n_calib=256, n_val=64, recovery_steps=args.recovery_steps, min_delta_m=NO_FLOOR
    )
    arm64.run_agent(root, result, engine, args.timeout, args.stall_s)
    arm64.check_outputs(root, result)
    _publish(args.out, arm64.SECTION, arm64.table(result, _command("arm64")))
    return 0


def run_sizing(args: argparse.Namespace) -> int:
    from edgecut_bench import sizing

    if args.devices < 1:
        raise ConfigError("--devices must be at least 1")
    if args.recovery_steps is not None and args.recovery_steps < 0:
        raise ConfigError("--recovery-steps must be 0 or more")
    ckpt = args.checkpoint or reference_checkpoint(args.data_dir)
    result = sizing.run(
        ckpt, args.data_dir, args.devices, args.builds, args.registry_url, args.recovery_steps
    )
    _publish(args.out, sizing.SECTION, sizing.table(result, _command("sizing")))
    return 0


def _command(bench: str) -> str:
    """The command line that produced the figures, URLs cut to their scheme (they may hold credentials)."""
    if bench not in sys.argv:
        return f"edgecut bench {bench}"
    argv = [a.split("://", 1)[0] + "://..." if "://" in a else a for a in sys.argv[1:]]
    return "edgecut " + " ".join(shlex.quote(a) for a in argv)


def _publish(out: Path, section: str, body: str) -> None:
    from edgecut.doc_sections import write_section

    print(f"## {section}\n\n{body}")
    if str(out) not in ("", "."):  # --out "" writes no markdown (argparse makes it Path("."))
        write_section(out, section, body)


def run_prune(args: argparse.Namespace) -> int:
    from rich.console import Console

    from edgecut.doc_sections import write_section
    from edgecut.server.cut.methods import METHODS
    from edgecut.server.mtl import checkpoint
    from edgecut.server.mtl.calibration import calibration_source
    from edgecut.server.mtl.sources import is_synthetic
    from edgecut_bench import prune as bench
    from edgecut_bench import prune_summary
    from edgecut_bench.doc import write_bullet

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method {unknown[0]!r}: choose from {', '.join(sorted(METHODS))}")
    try:
        levels = tuple(float(v) for v in args.levels.split(","))
    except ValueError:
        raise ConfigError(f"--levels must be numbers in (0, 1), got {args.levels!r}") from None
    if any(not 0 < v < 1 for v in levels):
        raise ConfigError(f"--levels must be in (0, 1), got {args.levels!r}")
    ckpt = args.checkpoint or reference_checkpoint(args.data_dir)
    # like prune and the server: the model's own data unless told otherwise (mtl/calibration.py)
    calib = calibration_source(checkpoint.read(ckpt), ckpt.name, args.calib_data, args.val_data).source
    cfg = bench.PruneBenchConfig(
        ckpt,
        tuple(t.strip() for t in args.tasks.split(",")),
        levels,
        methods,
        args.recovery_steps,
        cache_dir=scenes_cache(args.data_dir),
        model=args.model,
        calib_data=None if is_synthetic(calib) else calib,
        val_data=args.val_data,
        image_scale=args.image_scale,
    )
    if args.quick:
        cfg = bench.quick(cfg)
    base = checkpoint.load(ckpt, args.model)
    kinds = {t: base.task_specs[t].kind for t in cfg.tasks if t in base.task_specs}
    res = bench.run(cfg)
    # The exact command that produced the figures (argv[1:] = "bench prune ...").
    command = (
        "edgecut " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if "prune" in sys.argv
        else "edgecut bench prune"
    )
    text = bench.markdown(res, kinds, command)
    Console().print(text)
    if str(args.plot) not in ("", "."):  # --plot "" draws none
        bench.plot(res, args.plot)
        text += f"\n\n![Δm vs. params removed]({args.plot.name})\n"
    if str(args.out) not in ("", "."):  # --out "" writes no markdown
        write_section(args.out, args.section, text)
        if args.section == prune_summary.SECTION:  # another section is another question: no Summary bullet
            for lead, bullet in prune_summary.bullets(text).items():
                write_bullet(args.out, "Summary", lead, bullet)
    return 0


def run_model(args: argparse.Namespace) -> int:
    from rich.console import Console

    from edgecut.doc_sections import write_section
    from edgecut.server.mtl.train import TrainConfig, train
    from edgecut_bench import reference_doc
    from edgecut_bench.doc import write_bullet
    from edgecut_bench.reference_model import compare, extras, load_record

    default = args.checkpoint is None
    ckpt = reference_checkpoint(args.data_dir) if default else args.checkpoint
    if args.retrain:
        if not default:
            raise ConfigError("--retrain trains the data dir's reference: give it without --checkpoint")
        ckpt = trained_reference(args.data_dir)
        ckpt.unlink(missing_ok=True)
        train(TrainConfig(), out=ckpt, cache_dir=scenes_cache(args.data_dir))
    record = ckpt.with_suffix(".metrics.json")
    if not record.is_file():
        raise ConfigError(
            f"--checkpoint: no finished model at {ckpt} (edgecut train writes it and {record.name} when "
            "training ends)"
        )
    missing = [str(p) for p in args.compare if not p.is_file()]
    if missing:
        raise ConfigError(f"--compare: no checkpoint at {', '.join(missing)}")
    doc = load_record(ckpt)
    ref, compared = compare(ckpt, list(args.compare), doc["config"], scenes_cache(args.data_dir))
    body = reference_doc.section(doc, ckpt, default) + extras(doc, compared, ref)
    Console().print(body)
    if str(args.out) not in ("", "."):  # --out "" writes no markdown
        heading, lead = reference_doc.titled(doc, default)
        write_section(args.out, heading, body)
        write_bullet(args.out, "Summary", lead, reference_doc.bullet(doc, ckpt, default))
    return 0


TAILOR_CASES = (("seg", "depth"), ("normals", "seg", "depth"), ("count", "edges"))


def run_tailor(args: argparse.Namespace) -> int:
    import platform
    import statistics
    import time

    import torch
    from rich.console import Console

    from edgecut.doc_sections import write_section
    from edgecut.server.engine import load_engine
    from edgecut.server.spec import Budget, BuildSpec

    if args.repeats < 1:
        raise ConfigError("--repeats must be at least 1")
    cases = [tuple(t.strip() for t in group.split(",") if t.strip()) for group in args.task_sets.split(";")]
    if not cases or any(not c for c in cases):
        raise ConfigError(f"--task-sets must be task lists separated by ';', got {args.task_sets!r}")
    ckpt = args.checkpoint or reference_checkpoint(args.data_dir)
    engine = load_engine(ckpt, args.data_dir, min_delta_m=NO_FLOOR)
    engine.reference_metrics()  # computed once per server start, not per build
    rows = []
    for tasks in cases:
        spec = BuildSpec.create(list(tasks), Budget(macs_fraction=0.5), recover=False)
        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            built = engine.build(spec, lambda *a: None)
            runs.append({**built.extras, "wall": time.perf_counter() - t0})
            built.cleanup()
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rows.append(
            f"| {', '.join(spec.tasks)} | {med['importance_s']:.2f} | {med['pruning_s']:.2f} | "
            f"{med.get('batchnorm_s', 0.0):.2f} | {med['wall'] - med['total_s']:.2f} | **{med['wall']:.2f}** |"
        )
    body = "\n".join(
        [
            "`TorchEngine.build` without recovery on the reference model, budget macs=0.5, median of "
            f"{args.repeats}: importance (4 calibration batches of 32, label-free), channel pruning, BatchNorm "
            "re-estimation, then evaluation on 256 held-out scenes + ONNX export + onnxruntime check. "
            f"Machine: {platform.machine()}, 2 cores (shared with other jobs), torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads. Rerun: `{_command('tailor')}`.",
            "",
            "| tasks | importance s | pruning s | BN s | evaluate + export s | total s |",
            "|---|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )
    Console().print(body)
    if str(args.out) not in ("", "."):  # --out "" writes no markdown
        write_section(args.out, "Tailoring time (no recovery)", body)
    return 0


def run_generality(args: argparse.Namespace) -> int:
    from edgecut_bench import generality, saved_rows

    if args.render_from:
        runs = [
            saved_rows.load(p, generality.GeneralityResult, "bench generality rows") for p in args.render_from
        ]
        _generality_doc(args.out, generality.merged(runs))
        return 0
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    cfg = generality.GeneralityConfig(
        work_dir=args.data_dir / "bench" / ("generality-quick" if args.quick else "generality"),
        reference=args.checkpoint or reference_checkpoint(args.data_dir),
        cache_dir=scenes_cache(args.data_dir),
    )
    if args.quick:
        cfg = generality.quick(cfg)
    if args.ranking:
        cfg = replace(cfg, reference_pairs=generality.REFERENCE_PAIRS)
    if args.all_pairs:
        cfg = replace(cfg, pairs=generality.ALL_PAIRS, tight_pairs=())
    if args.architectures:
        names = tuple(a.strip() for a in args.architectures.split(",") if a.strip())
        unknown = [a for a in names if a not in generality.ARCHITECTURES]
        if unknown:
            print(
                f"unknown architecture {unknown[0]!r}: choose from {', '.join(generality.ARCHITECTURES)}",
                file=sys.stderr,
            )
            return 2
        cfg = replace(cfg, architectures=names)
    if seeds is not None:
        cfg = replace(cfg, seeds=seeds)
    if args.retrain:
        for old in cfg.work_dir.glob("*.pt"):
            old.unlink()
    res = generality.run(cfg)
    flags = [
        f
        for f, on in (("--quick", args.quick), ("--ranking", args.ranking), ("--all-pairs", args.all_pairs))
        if on
    ]
    flags += ["--architectures", args.architectures] if args.architectures else []
    flags += ["--seeds", args.seeds] if args.seeds is not None else []
    res.command = " ".join(["edgecut bench generality", *flags])
    rows = args.rows or args.data_dir / "bench" / "generality-rows.pkl"
    saved_rows.keep(res, rows)
    _generality_doc(args.out, res)
    return 0


def _generality_doc(out: Path, res: GeneralityResult) -> None:
    """The Generality section, and the Summary's ranking bullet when the run compared the rankings."""
    from edgecut_bench import generality_report, generality_summary
    from edgecut_bench.doc import write_bullet

    text = generality_report.markdown(res, res.command)
    _publish(out, generality_report.SECTION, text)
    if str(out) not in ("", "."):
        for lead, bullet in generality_summary.bullets(text).items():
            write_bullet(out, "Summary", lead, bullet)
    if res.ranking and str(out) not in ("", "."):
        write_bullet(out, "Summary", generality_report.RANKING_LEAD, generality_report.ranking_summary(res))


def run_quality(args: argparse.Namespace) -> int:
    from edgecut_bench import quality, quality_report, saved_rows

    if args.render_from:
        res = quality.merged(
            [saved_rows.load(p, quality.QualityResult, "bench quality rows") for p in args.render_from]
        )
    else:
        res = quality.run(_quality_config(args, quality.QualityConfig))
        res.command = _command("quality")
        rows = args.rows or args.data_dir / "bench" / "quality-rows.pkl"
        saved_rows.keep(res, rows)
    body = quality_report.markdown(res, res.command)
    if str(args.plot) not in ("", "."):
        quality_report.plot(res, args.plot)
        body += f"\n\n![Δm vs. wall clock per task set and budget]({args.plot.name})\n"
    _publish(args.out, quality_report.SECTION, body)
    if str(args.out) not in ("", ".") and res.cases:
        from edgecut_bench import quality_tables
        from edgecut_bench.doc import write_bullet

        write_bullet(args.out, "Summary", quality_tables.LEAD, quality_tables.summary(res))
    return 0


def add_seeds(parser: argparse.ArgumentParser, default: str | None = "0,1,2", said: str = "") -> None:
    parser.add_argument(
        "--seeds",
        default=default,
        help="seeds, ',' between: the run once per seed, compared by a paired test over them "
        f"(default {said or default}; one seed gives figures but no tested comparison)",
    )


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--seeds must be integers >= 0 separated by ',', got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must be distinct integers >= 0 separated by ',', got {text!r}")
    return seeds


def _cases(text: str) -> tuple[tuple[tuple[str, ...], float], ...]:
    """'seg,depth@0.5;seg,depth,normals@0.3' -> ((('seg', 'depth'), 0.5), ...)."""
    out = []
    for part in (p.strip() for p in text.split(";") if p.strip()):
        tasks, _, budget = part.partition("@")
        names = tuple(t.strip() for t in tasks.split(",") if t.strip())
        try:
            value = float(budget)
        except ValueError:
            value = math.nan
        if not names or not 0 < value <= 1:
            raise ConfigError(
                f"--cases must be TASKS@BUDGET separated by ';' (e.g. 'seg,depth@0.5'), got {part!r}"
            )
        out.append((names, value))
    if not out:
        raise ConfigError(f"--cases names no case: {text!r}")
    return tuple(out)


def _quality_config(args: argparse.Namespace, config: Callable[..., QualityConfig]) -> QualityConfig:
    task_sets = tuple(
        tuple(t.strip() for t in group.split(",") if t.strip()) for group in args.task_sets.split(";")
    )
    if not task_sets or any(not ts for ts in task_sets):
        raise ConfigError(f"--task-sets must be task lists separated by ';', got {args.task_sets!r}")
    try:
        budgets = tuple(float(v) for v in args.budgets.split(","))
    except ValueError:
        raise ConfigError(f"--budgets must be numbers in (0, 1], got {args.budgets!r}") from None
    if any(not 0 < b <= 1 for b in budgets):
        raise ConfigError(f"--budgets must be in (0, 1], got {args.budgets!r}")
    for name, value in (
        ("--scratch-epochs", args.scratch_epochs),
        ("--scratch-seconds", args.scratch_seconds),
        ("--train-scenes", args.train_scenes),
        ("--calib-scenes", args.calib_scenes),
        ("--val-scenes", args.val_scenes),
    ):
        if value <= 0:
            raise ConfigError(f"{name} must be positive, got {value}")
    if args.recovery_steps is not None and args.recovery_steps < 0:
        raise ConfigError(f"--recovery-steps must be 0 or more, got {args.recovery_steps}")
    refine_steps: tuple[int, ...] | None = None
    if args.refine_steps != "engine":
        try:
            refine_steps = tuple(int(v) for v in args.refine_steps.split(",") if v.strip())
        except ValueError:
            raise ConfigError(
                f"--refine-steps must be integers or 'engine', got {args.refine_steps!r}"
            ) from None
        if any(v <= 0 for v in refine_steps):
            raise ConfigError(f"--refine-steps must be positive, got {args.refine_steps!r}")
    ckpt = args.checkpoint or reference_checkpoint(args.data_dir)
    return config(
        ckpt,
        args.data_dir,
        task_sets,
        budgets,
        seeds=parse_seeds(args.seeds),
        cases=_cases(args.cases) if args.cases else (),
        n_calib=args.calib_scenes,
        n_val=args.val_scenes,
        train_scenes=args.train_scenes,
        scratch_epochs=args.scratch_epochs,
        scratch_seconds=args.scratch_seconds,
        recovery_steps=args.recovery_steps,
        refine_steps=refine_steps,
    )
