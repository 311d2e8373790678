"""`edgecut bench quality`: what a device ends up serving at its budget, against the honest baselines.

For each task set x MACs budget, on one engine (the reference model, its calibration images and its
validation scenes), rows for:
- the full model (the selected tasks' heads of the original: the quality to keep);
- the quick model and each refinement, built by the engine exactly as the fleet service builds them
  (`Engine.build`, then `Engine.refine` as many times as `Engine.refinements` says); the last
  refinement is the engine's from-scratch candidate (the reference architecture uniformly narrowed to
  the refined model's MACs, for the selected tasks only, trained with the reference's recipe on its
  labelled training scenes for `scratch_epochs`, fitted to `scratch_seconds`), shown also when the
  engine did not ship it;
- from scratch for the same time: the same narrowed architecture trained for the distillation
  lineage's wall clock;
- Torch-Pruning as its README shows it (tp_baseline.py: local magnitude, local Taylor, global isomorphic),
  then the training edgecut's own lineage gets (lineage.py): the same BatchNorm re-estimation, the quick
  build's recovery for as many steps as the quick build reached (a row "quick"), then the engine's
  refinement schedules, each shipped only when better on validation (a row "final").
Every row is evaluated on the same validation scenes, its MACs counted by prune.measure and its
latency measured with onnxruntime (1 thread, batch 1).

The whole matrix runs once per seed (`seeds`). A seed is one draw of everything random that every row
of a case shares: the calibration scenes (seed 0: the engine's own; seed s: another draw of as many),
the order and augmentation of every recovery and training, the scoring batches and the from-scratch
models' initialisation. The validation scenes and the labelled training scenes stay the same, so two
rows of one seed are paired (quality_report compares them with a paired test over seeds).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch.utils.data import Dataset

from edgecut.errors import ConfigError
from edgecut.server.cut.decompose import decompose
from edgecut.server.cut.latency import export_for_timing
from edgecut.server.cut.prune import Target, measure, size_target
from edgecut.server.cut.recover import RecoveryOptions
from edgecut.server.cut.scratch import ScratchOptions, narrow_to, steps_in, train_scratch
from edgecut.server.engine import CALIB_SEED, TRAIN_SEED, TorchEngine, load_engine
from edgecut.server.errors import DatasetError
from edgecut.server.mtl import checkpoint as checkpoints
from edgecut.server.mtl.calibration import calibration_source
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.data import Batch, synthetic_scenes
from edgecut.server.mtl.evaluate import Metrics, evaluate
from edgecut.server.mtl.metrics import delta_m
from edgecut.server.mtl.sources import LabelledSource, is_synthetic, labelled_tasks
from edgecut.server.mtl.train import TrainConfig
from edgecut.server.ort_latency import interleaved_latency_ms
from edgecut.server.paths import scenes_cache
from edgecut.server.progress import progress_bar
from edgecut.server.spec import NO_FLOOR, Budget, BuildSpec, BuiltArtifact, Refinement
from edgecut_bench.lineage import Schedule, Stage, follow, judging_all
from edgecut_bench.quality_rows import (
    FULL,
    QUICK,
    REFINED,
    RETRAINED,
    SCRATCH_CANDIDATE,
    SCRATCH_TIME,
    TP_FINAL,
    TP_QUICK,
    Case,
    Row,
)
from edgecut_bench.tp_baseline import VARIANTS, tp_prune

STAGES = (
    "full",
    "quick + refinements",
    "scratch (same time)",
    *(f"tp {v}" for v in VARIANTS),
)


@dataclass(frozen=True)
class QualityConfig:
    checkpoint: Path
    data_dir: Path
    task_sets: tuple[tuple[str, ...], ...] = (("seg", "depth"), ("seg", "depth", "normals"))
    budgets: tuple[float, ...] = (0.5, 0.3)
    n_calib: int = 512  # unlabelled calibration scenes (the engine's default)
    n_val: int = 256  # labelled validation scenes (the engine's default)
    train_scenes: int = 6000  # the from-scratch baselines' labelled training scenes (the reference's)
    scratch_epochs: float = 8.0  # the engine's from-scratch candidate's epochs (ScratchOptions.epochs)
    scratch_seconds: float = ScratchOptions.seconds  # ... and the time its steps are fitted to
    recovery_steps: int | None = None  # the engine's quick recovery (None = its default)
    refine_steps: tuple[int, ...] | None = None  # the refinements' steps (None = the engine's own)
    seeds: tuple[int, ...] = (0, 1, 2)  # the whole matrix once per seed (see the module doc)
    cases: tuple[tuple[tuple[str, ...], float], ...] = ()  # (task set, budget) to run; () = the matrix

    def matrix(self) -> list[tuple[tuple[str, ...], float]]:
        """The (task set, budget) cases this run measures: `cases`, else every task set at every budget."""
        return list(self.cases) or [(ts, b) for ts in self.task_sets for b in self.budgets]

    def recipe(self, seed: int = 0) -> TrainConfig:
        """The reference's training recipe (lr, weight decay, batch, one-cycle); `seed` initialises and
        orders (the scenes are the reference's own, TRAIN_SEED)."""
        return TrainConfig(n_train=self.train_scenes, seed=seed)

    def scratch(self, seed: int = 0) -> ScratchOptions:
        return ScratchOptions(self.scratch_epochs, self.scratch_seconds, self.recipe(seed))


@dataclass
class QualityResult:
    cfg: QualityConfig
    cases: list[Case]
    image_size: int
    seconds: float
    scratch_scales: dict[str, float] = field(default_factory=dict)  # case name -> width factor
    reference_epochs: int = 0  # how many epochs the reference trained (its checkpoint's record)
    scratch_number: int = 3  # the refinement that is the engine's from-scratch candidate
    command: str = ""  # the command line that ran it (the section's "Rerun:")
    recovery: str = ""  # the engine's quick recovery, as the section states it
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at the start and at the end
    checkpoint_sha256: str = ""  # the reference's content ("" in rows saved before it was recorded)


Advance = Callable[..., None]


def _quiet(stage: str, fraction: float, detail: str) -> None:
    return None


class _Bench:
    def __init__(self, cfg: QualityConfig, engine: TorchEngine, advance: Advance, seed: int) -> None:
        self.cfg = cfg
        self.engine = engine
        self.advance = advance
        self.seed = seed
        if engine.val is None:
            raise DatasetError("bench quality compares per-task metrics: the engine has no validation data")
        self.val = engine.val
        self.calib = engine.calib
        self.size = engine.base.input_size
        self._train = synthetic_scenes(
            cfg.train_scenes, TRAIN_SEED, self.size, scenes_cache(cfg.data_dir), show_progress=False
        )
        # the engine's from-scratch candidate learns from the same scenes as the baseline
        engine.train = LabelledSource(
            labelled_tasks(self._train), lambda: self._train, f"{cfg.train_scenes} synthetic scenes"
        )
        engine.scratch = cfg.scratch(seed)
        self._timing: list[tuple[Row, Path]] = []  # this case's rows and their ONNX files, timed together
        self._timing_dir = Path(tempfile.mkdtemp(prefix="bench-quality-"))

    def _to_time(self, row: Row, write: Callable[[Path], object]) -> Row:
        """Keep `row` to be timed with its case; `write(path)` puts its ONNX file there."""
        onnx = self._timing_dir / f"{len(self._timing)}.onnx"
        write(onnx)
        self._timing.append((row, onnx))
        return row

    def onnx_of(self, row: Row) -> Path:
        """The ONNX file of a row of the current case (until `time_case` times and removes it)."""
        return next(path for kept, path in self._timing if kept is row)

    def time_case(self) -> None:
        """Every row of the case timed in turns (ort_latency.interleaved_latency_ms), then the files go."""
        rows, paths = zip(*self._timing, strict=True) if self._timing else ((), ())
        for row, ms in zip(rows, interleaved_latency_ms(list(paths), self.size), strict=True):
            row.latency_ms = ms
        self._timing.clear()
        for p in paths:
            p.unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self._timing_dir, ignore_errors=True)

    def row(
        self,
        case: Case,
        teacher: MultiTaskModel,
        kind: str,
        label: str,
        model: MultiTaskModel,
        seconds: float,
        elapsed: float,
        note: str = "",
        metrics: Metrics | None = None,
    ) -> Row:
        """A row for `model` (`metrics`: its validation metrics when already measured)."""
        metrics = metrics if metrics is not None else evaluate(model, teacher.task_specs, self.val)
        s = measure(model, self.size)
        row = Row(
            kind,
            label,
            s.macs,
            s.params,
            math.nan,  # timed with the rest of the case (time_case)
            seconds,
            elapsed,
            metrics,
            delta_m(metrics, case.full.metrics, teacher.task_specs) if case.rows else 0.0,
            note=note,
        )
        return self._to_time(row, lambda onnx: export_for_timing(model, onnx))

    def artifact_row(
        self,
        case: Case,
        teacher: MultiTaskModel,
        art: BuiltArtifact,
        kind: str,
        label: str,
        seconds: float,
        elapsed: float,
        number: int,
    ) -> Row:
        metrics: Metrics = {t: dict(v) for t, v in art.meta.metrics.items() if t in case.tasks}
        row = Row(
            kind,
            label,
            art.meta.macs,
            art.meta.params,
            math.nan,  # timed with the rest of the case (time_case)
            seconds,
            elapsed,
            metrics,
            delta_m(metrics, case.full.metrics, teacher.task_specs),
            refinement=number,
            recovery_steps=art.meta.recovery_steps,
        )
        return self._to_time(row, lambda onnx: shutil.copyfile(art.onnx_path, onnx))

    def case(self, tasks: tuple[str, ...], budget: float) -> tuple[Case, float]:
        teacher = decompose(self.engine.base, tasks)
        kinds: dict[str, str] = {t: s.kind for t, s in teacher.task_specs.items()}
        case = Case(tasks, budget, kinds, seed=self.seed)
        case.rows.append(self.row(case, teacher, FULL, "full model", teacher, 0.0, 0.0))
        self.advance(1, case=case.name, stage="full")
        elapsed, distilled = self.tailored(case, teacher)
        self.advance(1, case=case.name, stage="tailored", dm=f"{case.rows[-1].delta_m:+.1f}")
        max_macs = size_target(Budget(macs_fraction=budget), measure(teacher, self.size)).max_macs
        assert max_macs is not None  # a MACs fraction always gives a MACs limit
        scale = self.scratch(case, teacher, distilled.macs, elapsed)
        schedule = self.tp_schedule(case)
        for variant, quick, final in zip(VARIANTS, TP_QUICK, TP_FINAL, strict=True):
            self.torch_pruning(case, teacher, variant, (quick, final), max_macs, schedule)
            self.advance(1, case=case.name, stage=f"tp {variant}", dm=f"{case.rows[-1].delta_m:+.1f}")
        self.time_case()
        return case, scale

    def tailored(self, case: Case, teacher: MultiTaskModel) -> tuple[float, Row]:
        """Quick build and every refinement through the engine; returns the distillation lineage's wall
        clock and its last shipped row (what the from-scratch candidate is judged against)."""
        spec = BuildSpec.create(list(case.tasks), Budget(macs_fraction=case.budget))
        t0 = time.perf_counter()
        parent = self.engine.build(spec, _quiet)
        seconds = time.perf_counter() - t0
        elapsed = seconds
        case.rows.append(self.artifact_row(case, teacher, parent, QUICK, "quick", seconds, elapsed, 0))
        shipped = case.rows[-1]
        reached, asked = (
            parent.extras.get("recovery_steps", 0.0),
            parent.extras.get("recovery_steps_asked", 0.0),
        )
        if reached < asked:  # the fleet's quick-build deadline: this row depends on the machine's load
            case.notes.append(
                f"the quick build's deadline stopped its recovery at {reached:.0f} of {asked:.0f} steps"
            )
        for number in range(1, self.engine.refinements(spec) + 1):
            ref = Refinement(_sha256(parent.onnx_path), parent.meta, number)
            if number > len(self.engine.refine_schedules):
                self.candidate(case, teacher, spec, ref, elapsed)
                continue
            t0 = time.perf_counter()
            built = self.engine.refine(spec, ref, _quiet)
            seconds = time.perf_counter() - t0
            elapsed += seconds  # a refinement not shipped counts too
            if built is None:
                case.notes.append(
                    f"refinement {number} ({seconds:.0f} s) was not better than its parent on the validation "
                    "set, so it was not shipped"
                )
                continue
            label = f"refinement {number}"
            case.rows.append(
                self.artifact_row(case, teacher, built, REFINED, label, seconds, elapsed, number)
            )
            shipped = case.rows[-1]
            parent.cleanup()
            parent = built
        parent.cleanup()
        return elapsed, shipped  # the candidate comes last and adds nothing to `elapsed`

    def candidate(
        self, case: Case, teacher: MultiTaskModel, spec: BuildSpec, ref: Refinement, elapsed: float
    ) -> None:
        """The engine's from-scratch candidate, asked for whatever it scores (`judge_only`) so that a
        candidate the engine would not ship still shows its figures; shipped by the engine's own rule
        (its verdict in the build's extras and notes)."""
        with judging_all(self.engine):
            t0 = time.perf_counter()
            built = self.engine.refine(spec, ref, _quiet)
            seconds = time.perf_counter() - t0
        if built is None:
            case.notes.append(
                f"refinement {ref.number}: no from-scratch candidate fits the budget and the refined model's speed"
            )
            return
        try:
            steps = int(built.extras.get("train_steps", 0))
            row = self.artifact_row(
                case,
                teacher,
                built,
                RETRAINED,
                f"refinement {ref.number} (from scratch)",
                seconds,
                elapsed + seconds,
                ref.number,
            )
            epochs = steps * self.cfg.recipe().batch_size / self.cfg.train_scenes
            scale = built.extras.get("width_scale", math.nan)
            row.note = f"widths x{scale:.3f}, {steps} steps ({epochs:.1f} epochs)"
            if not built.extras.get("shipped", 0.0):
                row.kind, row.label = SCRATCH_CANDIDATE, "from-scratch candidate (not shipped)"
                lower = built.extras.get("ship_lower_bound", math.nan)
                row.note += (
                    f"; not better than the refined model beyond noise (95 % lower bound {lower:+.2f})"
                )
            case.rows.append(row)
        finally:
            built.cleanup()

    def scratch(self, case: Case, teacher: MultiTaskModel, max_macs: int, same_time: float) -> float:
        """The same-time baseline, narrowed like the engine's candidate (to the refined model's MACs)."""
        recipe = self.cfg.recipe(self.seed)
        narrow = narrow_to(self.engine.base, case.tasks, Target(max_macs=max_macs), seed=self.seed)
        steps = steps_in(narrow.model, self._train, recipe, same_time)
        run = train_scratch(narrow.model, self._train, recipe, steps, seconds=same_time)
        note = f"{run.steps} steps"
        case.rows.append(
            self.row(
                case,
                teacher,
                SCRATCH_TIME,
                "scratch, same time",
                narrow.model,
                run.seconds,
                run.seconds,
                note,
            )
        )
        self.advance(1, case=case.name, stage="scratch same time", dm=f"{case.rows[-1].delta_m:+.1f}")
        return narrow.scale

    def tp_schedule(self, case: Case) -> Schedule:
        """The training the case's edgecut lineage got: the engine's BatchNorm re-estimation, its quick
        recovery for the steps the quick build reached (a deadline may have cut them), its refinements."""
        opts = self.engine.options
        quick = case.of(QUICK)[0]
        steps = quick.recovery_steps
        recovery = replace(opts.recovery, steps=steps, seconds=None) if opts.recovery and steps else None
        spec = BuildSpec.create(list(case.tasks), Budget(macs_fraction=case.budget))
        number = min(self.engine.refinements(spec), len(self.engine.refine_schedules))
        refinements = self.engine.refine_schedules[:number]
        return Schedule(
            opts.bn_batches, opts.batch_size, recovery, refinements, self._ships(case, refinements)
        )

    def _ships(self, case: Case, refinements: Sequence[RecoveryOptions]) -> Callable[[Stage, Stage], bool]:
        """The engine's own rule (TorchEngine.ships): the candidate's Δm gain over the current model, paired
        over the validation images, with a 95 % lower bound above 0; a quantisation-aware refinement is
        judged as both compute in int8, as the engine judges its own."""

        def ships(candidate: Stage, current: Stage) -> bool:
            int8 = refinements[candidate.refinement - 1].quantise
            return self.engine.ships(candidate.model, current.model, case.tasks, current.delta_m, int8).ship

        return ships

    def torch_pruning(
        self,
        case: Case,
        teacher: MultiTaskModel,
        variant: str,
        kinds: tuple[str, str],
        max_macs: int,
        schedule: Schedule,
    ) -> None:
        """Two rows: Torch-Pruning's model after the quick build's training, and after the refinements'."""
        t0 = time.perf_counter()
        model, _ = tp_prune(teacher, variant, max_macs, self.calib)
        pruning = time.perf_counter() - t0
        scored: dict[int, Metrics] = {}

        def score(m: MultiTaskModel) -> float:
            scored[id(m)] = evaluate(m, teacher.task_specs, self.val)
            return delta_m(scored[id(m)], case.full.metrics, teacher.task_specs)

        lineage = follow(model, teacher, self.calib, schedule, score)
        quick_steps = schedule.quick.steps if schedule.quick else 0
        final_steps = quick_steps + sum(schedule.refinements[n - 1].steps for n in lineage.shipped)
        quick_s, whole = pruning + lineage.quick.seconds, pruning + lineage.seconds
        name = f"Torch-Pruning {variant}"
        quick, final = lineage.quick.model, lineage.final.model
        rows = [
            self.row(
                case,
                teacher,
                kinds[0],
                f"{name}, quick",
                quick,
                quick_s,
                quick_s,
                f"{quick_steps} recovery steps",
                scored[id(quick)],
            ),
            # its own seconds: the refinements' (shipped or not); from the start: the whole lineage's
            self.row(
                case,
                teacher,
                kinds[1],
                f"{name}, final",
                final,
                whole - quick_s,
                whole,
                lineage.note(),
                scored[id(final)],
            ),
        ]
        rows[0].recovery_steps, rows[1].recovery_steps = quick_steps, final_steps
        case.rows += rows


def _schedule(r: RecoveryOptions) -> str:
    cap = f", at most {r.seconds:g} s" if r.seconds else ""
    feats = f" + trunk features x{r.features:g}" if r.features else ""
    aware = ", quantisation-aware" if r.quantise else ""
    return f"{r.steps} steps of {r.target}{feats} (lr {r.lr:g}{cap}{aware})"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _reseed(engine: TorchEngine, cfg: QualityConfig, seed: int, own_calib: Dataset[Batch]) -> None:
    """Point the engine at seed `seed`: its calibration draw and every random choice of a build
    (scoring batches, recovery order and augmentation); seed 0 is the engine exactly as loaded."""
    torch.manual_seed(seed)
    engine.calib = (
        own_calib
        if seed == 0
        else synthetic_scenes(
            cfg.n_calib,
            CALIB_SEED + 1000 * seed,  # never the validation (1000) or training (0) scenes' seed
            engine.base.input_size,
            scenes_cache(cfg.data_dir),
            show_progress=False,
        )
    )
    rec = engine.options.recovery
    engine.options = replace(engine.options, seed=seed, recovery=replace(rec, seed=seed) if rec else None)
    engine.refine_schedules = tuple(replace(r, seed=seed) for r in engine.refine_schedules)


def _check_seeds(cfg: QualityConfig) -> None:
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds) or min(cfg.seeds) < 0:
        raise ConfigError(f"seeds must be distinct integers >= 0, got {cfg.seeds}")
    if cfg.seeds == (0,):
        return
    source = calibration_source(checkpoints.read(cfg.checkpoint), cfg.checkpoint.name, None, None).source
    if not is_synthetic(source):
        raise ConfigError(
            f"seeds other than 0 draw their calibration from synthetic scenes, but {cfg.checkpoint.name} "
            f"calibrates on {source}: run --seeds 0"
        )


def engine_for(cfg: QualityConfig) -> TorchEngine:
    """The engine the bench builds with: the server's, with `cfg`'s data and schedules and no Δm floor."""
    return load_engine(
        cfg.checkpoint,
        cfg.data_dir,
        n_calib=cfg.n_calib,
        n_val=cfg.n_val,
        recovery_steps=cfg.recovery_steps,
        refine_steps=cfg.refine_steps,
        min_delta_m=NO_FLOOR,
    )


def run(cfg: QualityConfig, show_progress: bool = True) -> QualityResult:
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    _check_seeds(cfg)
    engine = engine_for(cfg)
    cases, scales = [], {}
    own_calib = engine.calib
    total = len(cfg.seeds) * len(cfg.matrix()) * len(STAGES)
    label = f"bench quality ({len(cfg.seeds)} seed{'s' if len(cfg.seeds) > 1 else ''})"
    with progress_bar(label, total=total, enabled=show_progress) as advance:
        for seed in cfg.seeds:
            _reseed(engine, cfg, seed, own_calib)
            bench = _Bench(cfg, engine, advance, seed)
            try:
                for tasks, budget in cfg.matrix():
                    case, scale = bench.case(tasks, budget)
                    cases.append(case)
                    scales[case.name] = scale
            finally:
                bench.close()
    engine.calib = own_calib
    rec = engine.options.recovery
    said = _schedule(rec) if rec else "none"
    if engine.refine_schedules:
        said += "; refinements: " + ", ".join(_schedule(r) for r in engine.refine_schedules)
    return QualityResult(
        cfg,
        cases,
        engine.base.input_size,
        time.perf_counter() - t0,
        scales,
        recovery=said,
        load=(load0, os.getloadavg()[0]),
        scratch_number=len(engine.refine_schedules) + 1,
        reference_epochs=epochs_trained(cfg.checkpoint),
        checkpoint_sha256=hashlib.sha256(cfg.checkpoint.read_bytes()).hexdigest(),
    )


def epochs_trained(path: Path) -> int:
    """How many epochs the reference trained (a converged run records its curve)."""
    doc = checkpoints.read(path)
    return len(doc.get("curve") or []) or int(doc.get("train_config", {}).get("epochs", 0))


def merged(results: list[QualityResult]) -> QualityResult:
    """Several runs' rows as one result (e.g. the seeds or cases of a full run split over CI jobs); the
    runs must share every setting but their seeds and cases, and measure no case twice on one seed."""
    first = results[0]
    if len(results) == 1:
        return first

    def settings(r: QualityResult) -> QualityConfig:
        # where the checkpoint and the scene cache were on the machine that ran it does not matter (runs
        # split over CI jobs sit in other checkouts): its name does, and its content where recorded
        return replace(
            r.cfg,
            seeds=(),
            cases=(),
            task_sets=(),
            budgets=(),
            checkpoint=Path(r.cfg.checkpoint.name),
            data_dir=Path("."),
        )

    shas = {r.checkpoint_sha256 for r in results} - {""}
    if len(shas) > 1:
        raise ConfigError(
            "rows from runs on different reference models cannot be merged (their checkpoints differ)"
        )
    seen: set[str] = set()
    for r in results:
        if settings(r) != settings(first) or r.image_size != first.image_size:
            raise ConfigError(
                "rows from runs with different settings cannot be merged: only --seeds, --cases, "
                "--task-sets and --budgets may differ"
            )
        for case in r.cases:
            if case.name in seen:
                raise ConfigError(f"two of the row files measured {case.name}: give each case and seed once")
            seen.add(case.name)
    cases = [c for r in results for c in r.cases]
    seeds = tuple(sorted({c.seed for c in cases if c.seed is not None}))
    matrix = tuple(dict.fromkeys((c.tasks, c.budget) for c in cases))
    return replace(
        first,
        cfg=replace(first.cfg, seeds=seeds, cases=matrix),
        cases=cases,
        seconds=sum(r.seconds for r in results),
        scratch_scales={k: v for r in results for k, v in r.scratch_scales.items()},
        command="; ".join(dict.fromkeys(r.command for r in results)),
        load=(first.load[0], results[-1].load[1]),
    )
