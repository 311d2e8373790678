"""`edgecut bench quick-load`: the fleet's quick build on a quiet and on a busy machine.

Each task set is built at macs 0.5 by the server's own quick build (TorchEngine.build: QUICK_RECOVERY's
steps under its time limit and the tailoring deadline, QUICK_DEADLINE_S) once on a quiet machine and once
while `edgecut_bench.load` keeps `cores` cores busy (the documented load generator: `python -m
edgecut_bench.load --cores N`). A row is one build: its seconds (what a device waits for beyond the
network), the recovery steps it reached of those asked, and its Δm against the decomposed full model on
the engine's validation scenes; with `refine`, refinement 1 under the same load too (what a device gets
when the server's quality floor holds a poor quick model back). Run it alone on the machine: the busy
rows are only as busy as the load generator makes them.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgecut_bench.load import busy
from edgecut_bench.machine import cpu_name

if TYPE_CHECKING:
    from edgecut.server.engine import TorchEngine

SECTION = "Quick build on a busy machine"
LEAD = SECTION  # the Summary's bullet
TASK_SETS = (("seg", "depth"), ("seg", "depth", "normals"))


@dataclass
class QuickRow:
    tasks: tuple[str, ...]
    busy_cores: int  # 0: quiet
    seconds: float  # the quick build's wall clock
    steps: int  # recovery steps reached
    steps_asked: int
    delta_m: float  # % vs. the decomposed full model
    quantise_s: float = 0.0  # of `seconds`: making and checking the INT8 variant
    int8_mb: float | None = None  # the INT8 variant's size (None: none passed its check)
    refine_seconds: float | None = None  # refinement 1 under the same load (with --refine)
    refine_delta_m: float | None = None


@dataclass
class QuickLoadResult:
    checkpoint: str
    macs: float
    cores: int
    machine: str
    date: str
    recovery: str  # the quick recovery as the engine runs it
    deadline_s: float
    floor: float  # the server's quick_min_delta_m default
    rows: list[QuickRow] = field(default_factory=list)
    command: str = ""
    seconds: float = 0.0


def measure(engine: TorchEngine, tasks: tuple[str, ...], macs: float, cores: int, refine: bool) -> QuickRow:
    """One quick build of `tasks` at `macs` with `cores` cores kept busy meanwhile (0: quiet); with
    `refine`, its first refinement too, judged but shipped whatever the rule says (its figures are the
    point)."""
    from edgecut.server.cut.refine import quality
    from edgecut.server.spec import Budget, BuildSpec, Refinement

    spec = BuildSpec.create(list(tasks), Budget(macs_fraction=macs))
    specs = {t: engine.base.task_specs[t] for t in tasks}
    with busy(cores) if cores else nullcontext():
        built = engine.build(spec, lambda *_: None)
        meta = built.meta
        row = QuickRow(
            tasks,
            cores,
            float(built.extras["seconds"]),
            int(built.extras.get("recovery_steps", 0)),
            int(built.extras.get("recovery_steps_asked", 0)),
            quality(meta.metrics, meta.reference_metrics, specs) or 0.0,
            float(built.extras.get("quantise_s", 0.0)),
            next((v.onnx_path.stat().st_size / 1e6 for v in built.variants if v.meta.quantized), None),
        )
        built.cleanup()
        if refine:
            from edgecut_bench.lineage import judging_all  # torch: not at import (the CLI stays light)

            with judging_all(engine):
                r1 = engine.refine(spec, Refinement("quick", meta, 1), lambda *_: None)
            if r1 is not None:
                r1.cleanup()
                row.refine_seconds = float(r1.extras["seconds"])
                row.refine_delta_m = quality(r1.meta.metrics, r1.meta.reference_metrics, specs) or 0.0
    return row


def run(
    checkpoint: Path,
    cores: int,
    macs: float = 0.5,
    refine: bool = False,
    task_sets: tuple[tuple[str, ...], ...] = TASK_SETS,
    progress: Callable[[str], None] = lambda _: None,
) -> QuickLoadResult:
    from edgecut.server.cut.refine import QUICK_DEADLINE_S, QUICK_RECOVERY
    from edgecut.server.engine import load_engine
    from edgecut.server.fleet.jobs.quality_floor import QUICK_FLOOR
    from edgecut.server.spec import NO_FLOOR

    t0 = time.perf_counter()
    r = QUICK_RECOVERY
    res = QuickLoadResult(
        checkpoint.name,
        macs,
        cores,
        f"{platform.machine()}, {os.cpu_count()} cores, {cpu_name()}",
        time.strftime("%Y-%m-%d"),
        f"{r.steps} steps, at most {r.seconds:g} s",
        QUICK_DEADLINE_S,
        QUICK_FLOOR,
    )
    with tempfile.TemporaryDirectory(prefix="quick-load-") as tmp:
        # the server's quick build as when refinements follow, no Δm floor: the figure is the finding
        engine = load_engine(checkpoint, Path(tmp), train_data="off", min_delta_m=NO_FLOOR)
        engine.reference_metrics()  # evaluated once per server, not part of a build's time
        for tasks in task_sets:
            for busy_cores in (0, cores):
                row = measure(engine, tasks, macs, busy_cores, refine)
                res.rows.append(row)
                progress(
                    f"{'+'.join(tasks)}, {busy_cores} busy cores: {row.seconds:.1f} s, {row.steps} of "
                    f"{row.steps_asked} steps, Δm {row.delta_m:+.2f} %"
                )
    res.seconds = time.perf_counter() - t0
    return res


def _said(row: QuickRow) -> str:
    if row.busy_cores == 0:
        return "quiet"
    return f"{row.busy_cores} core{'s' if row.busy_cores > 1 else ''} busy"


def markdown(res: QuickLoadResult) -> str:
    refined = any(r.refine_seconds is not None for r in res.rows)
    cores = f"{res.cores} core{'s' if res.cores > 1 else ''}"
    lines = [
        f"The fleet's quick build (`TorchEngine.build` as the server runs it: recovery {res.recovery}, and "
        f"none once the build has taken {res.deadline_s:g} s) of each task set at macs {res.macs:g} of "
        f"`{res.checkpoint}`, once on a quiet machine and once while the load generator keeps {cores} busy "
        f"(`python -m edgecut_bench.load --cores {res.cores}`: one process per core spinning a pure-Python "
        "loop). Δm against the decomposed full model on the engine's validation scenes. The server holds back "
        f"a quick model below its floor (`quick_min_delta_m`, default {res.floor:g} %) while a refinement may "
        "replace it"
        + (
            "; *refinement 1* is the first refinement of that build under the same load, judged but "
            "reported whatever the shipping rule says"
            if refined
            else ""
        )
        + ".",
        "",
        f"Machine: {res.machine}; {res.date}; whole run {res.seconds / 60:.1f} min. Rerun: "
        f"`{res.command or 'edgecut bench quick-load'}` (alone on the machine).",
        "",
        "| tasks | load | build s | of which INT8 s | INT8 MB | recovery steps | Δm % | below the floor"
        + (" | refinement 1 s | refinement 1 Δm % |" if refined else " |"),
        "|---|---|---:|---:|---:|---:|---:|---" + ("|---:|---:|" if refined else "|"),
    ]
    for r in res.rows:
        cells = [
            " + ".join(r.tasks),
            _said(r),
            f"{r.seconds:.1f}",
            f"{r.quantise_s:.1f}",
            "-" if r.int8_mb is None else f"{r.int8_mb:.2f}",
            f"{r.steps} of {r.steps_asked}",
            f"{r.delta_m:+.2f}",
            "yes: held back" if r.delta_m < res.floor else "no",
        ]
        if refined:
            cells += [
                "-" if r.refine_seconds is None else f"{r.refine_seconds:.1f}",
                "-" if r.refine_delta_m is None else f"{r.refine_delta_m:+.2f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    quiet = [r for r in res.rows if r.busy_cores == 0]
    loaded = [r for r in res.rows if r.busy_cores > 0]
    if quiet and loaded:
        held = [r for r in loaded if r.delta_m < res.floor]
        lines += [
            "",
            f"Quiet, the quick model comes after {_span(quiet)} s at Δm {_dm_span(quiet)} %; with "
            f"{cores} busy after {_span(loaded)} s at Δm {_dm_span(loaded)} %"
            + (
                f": {len(held)} of {len(loaded)} busy builds fall below the floor, so the device keeps its "
                "model (and is told why) until a refinement passes."
                if held
                else ", every one above the floor."
            ),
        ]
    return "\n".join(lines) + "\n"


def _span(rows: list[QuickRow]) -> str:
    lo, hi = min(r.seconds for r in rows), max(r.seconds for r in rows)
    return f"{lo:.1f}" if round(lo, 1) == round(hi, 1) else f"{lo:.1f}–{hi:.1f}"


def _dm_span(rows: list[QuickRow]) -> str:
    """Each build's Δm in table order (one per task set)."""
    return " / ".join(f"{r.delta_m:+.2f}" for r in rows)


def bullet(res: QuickLoadResult) -> str:
    """The Summary's bullet (after LEAD), from the rows."""
    quiet = [r for r in res.rows if r.busy_cores == 0]
    loaded = [r for r in res.rows if r.busy_cores > 0]
    said = (
        f"(`edgecut bench quick-load`, macs {res.macs:g}, {', '.join(' + '.join(r.tasks) for r in quiet)}): "
    )
    if quiet:
        said += f"quiet, the quick model comes after {_span(quiet)} s at Δm {_dm_span(quiet)} %"
    if loaded:
        held = sum(r.delta_m < res.floor for r in loaded)
        steps = " / ".join(f"{r.steps}" for r in loaded)
        said += (
            f"; with {res.cores} core{'s' if res.cores > 1 else ''} busy after {_span(loaded)} s, {steps} of "
            f"{loaded[0].steps_asked} recovery steps, at Δm {_dm_span(loaded)} %: "
            + (
                f"{held} of {len(loaded)} below the {res.floor:g} % floor, held back while the device keeps its "
                "model until a refinement passes"
                if held
                else f"none below the {res.floor:g} % floor"
            )
        )
    return said + "."
