"""`edgecut bench precision`: edgecut's tailored models in fp32 and static INT8 against what a user gets
for free, the full model quantised by onnxruntime (issue 30).

For each task set, on one engine (the reference model, its calibration images, its validation scenes):
- the full model (the task set's heads of the reference) exported to ONNX: fp32, and the user's
  alternative, onnxruntime static INT8 exactly as its docs show (precision_onnx.user_static_int8);
- at each MACs budget, the model the engine ships after its refinements, built by bench quality's own
  lineage (quality._Bench.tailored: `TorchEngine.build`, then every `TorchEngine.refine`): its fp32 file,
  and that file quantised by the engine's quantiser with its per-task check
  (edgecut.server.cut.quantise.quantise_checked), which may keep nodes fp32 or answer fp32.
The INT8 models are made once per seed, a seed being which calibration images (the same draw of the
engine's calibration scenes for the user's model and edgecut's). Every file is scored on the validation
scenes by onnxruntime (Δm against the full fp32 file) and all files are timed in turns in one process
(precision_onnx.timed_in_turns), at batch 1, with each thread count, at the models' own input size and
at a larger one (the same files with their input made larger: speed only, no teacher exists there).
"""

from __future__ import annotations

import itertools
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch.utils.data import Dataset

from edgecut.server.cut.decompose import decompose
from edgecut.server.cut.export import export_onnx, input_spec, output_specs
from edgecut.server.cut.prune import measure
from edgecut.server.cut.quantise import QuantOptions, calibration_images, quantise_checked
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.data import Batch
from edgecut.server.mtl.evaluate import Metrics, evaluate_onnx
from edgecut.server.mtl.metrics import delta_m
from edgecut.server.mtl.tasks import TaskSpec
from edgecut.server.progress import progress_bar
from edgecut_bench import quality
from edgecut_bench.machine import cpu_name
from edgecut_bench.precision_onnx import USER_SCHEMES, resized, timed_in_turns, user_static_int8
from edgecut_bench.quality_rows import FULL, Case

FP32, INT8 = "fp32", "int8"


@dataclass(frozen=True)
class PrecisionConfig:
    quality: quality.QualityConfig  # the engine, its data and lineage: bench quality's settings (seed 0)
    seeds: tuple[int, ...] = (0, 1, 2)  # calibration draws of the INT8 models
    calib_images: int = 128  # calibration images per INT8 model (the user's and edgecut's)
    large: int = 128  # the larger input size timed (0: none)
    threads: tuple[int, ...] = (1, 2)
    rounds: int = 7  # timing: rounds, each running every file `runs` times in turn
    runs: int = 30
    # the engine's per-task check: points a task may lose against fp32 (said in the section)
    check_threshold: float = QuantOptions().threshold


@dataclass
class Model:
    """One ONNX file: a row of the section (an INT8 model once per calibration seed)."""

    tasks: tuple[str, ...]
    budget: float | None  # None: the full model
    precision: str  # what the file runs in: fp32 or int8 (edgecut's check may answer fp32)
    seed: int | None  # the calibration draw of a quantised model
    macs: int
    size_bytes: int
    metrics: Metrics
    delta_m: float = 0.0  # % vs. the full fp32 file
    ms: dict[str, float] = field(default_factory=dict)  # timing key (see `key`) -> median ms
    quantised: bool = False  # asked for INT8 (the user's or edgecut's quantiser ran)
    scheme: str = ""  # the user's INT8: which activations (precision_onnx.USER_SCHEMES)
    note: str = ""

    @property
    def name(self) -> str:
        return "full" if self.budget is None else f"edgecut macs {self.budget:g}"


def key(size: int, threads: int) -> str:
    """How a timing is filed in `Model.ms`: input size and onnxruntime intra-op threads."""
    return f"{size}px/{threads}t"


@dataclass
class PrecisionResult:
    cfg: PrecisionConfig
    models: list[Model]
    image_size: int
    timings: list[str]  # the `key`s measured, in order
    seconds: float = 0.0
    command: str = ""
    machine: str = ""
    onnxruntime: str = ""
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at the start and at the end
    shipped: dict[str, str] = field(default_factory=dict)  # task set @ budget -> which model shipped, notes
    torch_threads: int = 1  # the engine's training (its lineage's steps depend on it)


# The engine's INT8 answer for one fp32 file: (precision, INT8 file or None, note); the argument order
# is quantise_checked's: fp32 file, INT8 file to write, calibration images, task specs, validation data.
EdgecutInt8 = Callable[
    [Path, Path, np.ndarray, dict[str, TaskSpec], Dataset[Batch]], tuple[str, Path | None, str]
]
Images = Callable[[Dataset[Batch], int, int], np.ndarray]  # (calibration data, n, seed) -> N x 3 x H x W


def engine_int8(
    src: Path, dst: Path, images: np.ndarray, specs: dict[str, TaskSpec], val: Dataset[Batch]
) -> tuple[str, Path | None, str]:
    """The engine's quantiser with its per-task check (mixed precision, or fp32 and why)."""
    out = quantise_checked(src, dst, images, specs, val)
    kept = f"{len(out.excluded_nodes)} nodes kept fp32" if out.excluded_nodes else ""
    return out.precision, out.path, "; ".join(n for n in (kept, out.note) if n)


def run(
    cfg: PrecisionConfig,
    show_progress: bool = True,
    edgecut_int8: EdgecutInt8 = engine_int8,
    images: Images = calibration_images,
) -> PrecisionResult:
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    qcfg = replace(cfg.quality, seeds=(0,))
    engine = quality.engine_for(qcfg)
    assert engine.val is not None  # bench quality's _Bench refuses an engine without validation data
    torch.manual_seed(0)
    matrix = qcfg.matrix()
    task_sets = list(dict.fromkeys(tasks for tasks, _ in matrix))
    n_int8 = len(cfg.seeds) * (len(USER_SCHEMES) * len(task_sets) + len(matrix))
    steps = len(matrix) + n_int8 + len(cfg.threads) * (2 if cfg.large else 1)
    work = Path(tempfile.mkdtemp(prefix="bench-precision-"))
    models: list[tuple[Model, Path]] = []
    shipped: dict[str, str] = {}
    try:
        with progress_bar("bench precision", total=steps, enabled=show_progress) as advance:
            bench = quality._Bench(qcfg, engine, advance=lambda *a, **k: None, seed=0)
            draws = {s: images(engine.calib, cfg.calib_images, s) for s in cfg.seeds}
            try:
                for tasks in task_sets:
                    teacher = decompose(engine.base, tasks)
                    full = _full_file(teacher, engine.base_model_id, work / f"{'-'.join(tasks)}-full.onnx")
                    models.append((_model(tasks, None, FP32, None, teacher, full, engine.val), full))
                    for (seed, x), scheme in itertools.product(draws.items(), USER_SCHEMES):
                        q = full.with_name(f"{full.stem}.int8-{scheme}-{seed}.onnx")
                        user_static_int8(full, q, x, scheme)
                        row = _model(tasks, None, INT8, seed, teacher, q, engine.val, quantised=True)
                        row.scheme = scheme
                        models.append((row, q))
                        advance(1, model=f"{'+'.join(tasks)} full int8 {scheme}", seed=seed)
                    for budget in (b for t, b in matrix if t == tasks):
                        advance(0, model=f"{'+'.join(tasks)} edgecut {budget:g}", stage="engine lineage")
                        fp32, built, said = _shipped(bench, teacher, tasks, budget, work)
                        shipped[f"{' + '.join(tasks)} @ macs {budget:g}"] = said
                        models.append(
                            (_model(tasks, budget, FP32, None, teacher, fp32, engine.val, built), fp32)
                        )
                        advance(1, model=f"{'+'.join(tasks)} edgecut {budget:g}", stage="built")
                        for seed, x in draws.items():
                            q = fp32.with_name(f"{fp32.stem}.int8-{seed}.onnx")
                            precision, path, note = edgecut_int8(fp32, q, x, teacher.task_specs, engine.val)
                            file = path if precision == INT8 and path is not None else fp32
                            row = _model(
                                tasks, budget, precision, seed, teacher, file, engine.val, built, True
                            )
                            row.note = note
                            models.append((row, file))
                            advance(1, model=f"{'+'.join(tasks)} edgecut {budget:g} int8", seed=seed)
            finally:
                bench.close()
            for full_row in (m for m, _ in models if m.budget is None and m.precision == FP32):
                for m, _ in models:
                    if m.tasks == full_row.tasks:
                        m.delta_m = delta_m(m.metrics, full_row.metrics, engine.base.task_specs)
            timings = _time_all(cfg, models, engine.base.input_size, work, advance)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return PrecisionResult(
        cfg,
        [m for m, _ in models],
        engine.base.input_size,
        timings,
        time.perf_counter() - t0,
        machine=f"{platform.machine()}, {os.cpu_count()} cores, {cpu_name()}",
        onnxruntime=ort.__version__,
        load=(load0, os.getloadavg()[0]),
        shipped=shipped,
        torch_threads=torch.get_num_threads(),
    )


def _full_file(teacher: MultiTaskModel, base_id: str, path: Path) -> Path:
    """The full model as an ONNX artifact like the engine's (dynamic batch, metadata), as a user exports it."""
    from edgecut.model_meta import ModelMeta

    size = measure(teacher, teacher.input_size)
    meta = ModelMeta(
        base_model=base_id,
        tasks=teacher.task_names,
        input=input_spec(teacher),
        outputs=output_specs(teacher),
        params=size.params,
        macs=size.macs,
        full_params=size.params,
        full_macs=size.macs,
        method="full",
    )
    export_onnx(teacher, meta, path)
    return path


def _shipped(
    bench: quality._Bench, teacher: MultiTaskModel, tasks: tuple[str, ...], budget: float, work: Path
) -> tuple[Path, int, str]:
    """The engine's lineage for one budget (bench quality's): the file it ships last, its MACs, which
    model it is."""
    case = Case(tasks, budget, {t: s.kind for t, s in teacher.task_specs.items()}, seed=0)
    case.rows.append(bench.row(case, teacher, FULL, "full model", teacher, 0.0, 0.0))
    bench.tailored(case, teacher)
    final = case.final()
    assert final is not None  # the quick model always ships
    path = work / f"{'-'.join(tasks)}-{budget:g}.onnx"
    shutil.copyfile(bench.onnx_of(final), path)
    bench.time_case()  # removes the case's files
    said = f"{final.label} (Δm {final.delta_m:+.2f} % in torch)"
    return path, final.macs, "; ".join([said, *case.notes])


def _model(
    tasks: tuple[str, ...],
    budget: float | None,
    precision: str,
    seed: int | None,
    teacher: MultiTaskModel,
    path: Path,
    val: Dataset[Batch],
    macs: int | None = None,
    quantised: bool = False,
) -> Model:
    metrics = evaluate_onnx(path, teacher.task_specs, val)
    macs = macs if macs is not None else measure(teacher, teacher.input_size).macs
    return Model(tasks, budget, precision, seed, macs, path.stat().st_size, metrics, quantised=quantised)


def _time_all(
    cfg: PrecisionConfig,
    models: list[tuple[Model, Path]],
    size: int,
    work: Path,
    advance: Callable[..., None],
) -> list[str]:
    """Every file timed in turns with every other, per input size and thread count."""
    files = list(dict.fromkeys(p for _, p in models))  # an INT8 answer of fp32 is the fp32 file
    sizes = {size: files}
    if cfg.large and cfg.large != size:
        sizes[cfg.large] = [resized(p, work / "large" / p.name, cfg.large) for p in files]
    keys = []
    for px, paths in sizes.items():
        for threads in cfg.threads:
            ms = dict(zip(files, timed_in_turns(paths, px, cfg.rounds, cfg.runs, threads), strict=True))
            for m, p in models:
                m.ms[key(px, threads)] = ms[p]
            keys.append(key(px, threads))
            advance(1, timing=key(px, threads))
    return keys
