"""`edgecut bench adapt`: tailoring to what a device sees from its statistics summary alone (issue 31).

For each task set, budget and seed, on the reference model and the engine's clean calibration images:
(a) the fleet's tailored model (edgecut's tailor with the quick build's recovery, on the clean images);
for each shift of the suite (edgecut/server/mtl/shifts.py) a device sees its own images (a scene draw of
its own, shifted) and summarises them as the agent does: the exported statistics ONNX run by onnxruntime
over them in batches of 16, an `Accumulator`, `to_proto` (the bytes sent) and `from_proto`. Then
(b) the model adapted from that summary (edgecut/server/cut/adapt.py, and AdaBN alone beside it),
(c) the oracle: tailored exactly as (a) but on the device's shifted images themselves, and
(d) test-time BatchNorm adaptation: (a) normalising every batch of 16 by its own statistics.
Every model is scored on the engine's validation scenes under the same shift (labels known to the bench
only), Δm against the full model on the clean validation scenes; (b) is also scored unshifted.
"""

from __future__ import annotations

import copy
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from edgecut.errors import ConfigError
from edgecut.norm_stats import Accumulator, Layers, from_proto, to_proto
from edgecut.server.cut.adapt import AdaptOptions, adapt
from edgecut.server.cut.decompose import decompose
from edgecut.server.cut.recover import RecoveryOptions, recalibrate_batchnorm
from edgecut.server.cut.refine import QUICK_RECOVERY
from edgecut.server.cut.statistics import export_statistics_model
from edgecut.server.cut.tailor import TailorOptions, tailor
from edgecut.server.engine import load_engine
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.data import TensorSamples, synthetic_scenes
from edgecut.server.mtl.evaluate import Metrics, evaluate, evaluate_fn
from edgecut.server.mtl.metrics import delta_m
from edgecut.server.mtl.shifts import SHIFTS, shifted
from edgecut.server.mtl.tasks import TaskSpec
from edgecut.server.paths import scenes_cache
from edgecut.server.progress import progress_bar
from edgecut.server.spec import Budget

NONE = "none"  # the unshifted set
DEVICE_SEED = 4242  # the devices' own scenes: a draw apart from the server's calibration and validation
DEVICE_BATCH = 16  # the agent's batches of the statistics model
# what is scored: (a) fleet, (b) adapted (and AdaBN alone), (c) oracle, (d) test-time BatchNorm
FLEET, ADAPTED, ADABN, ORACLE, TEST_TIME = "fleet", "adapted", "adabn", "oracle", "test-time BN"
KINDS = (FLEET, ADAPTED, ADABN, ORACLE, TEST_TIME)


@dataclass(frozen=True)
class AdaptBenchConfig:
    checkpoint: Path
    data_dir: Path
    task_sets: tuple[tuple[str, ...], ...] = (("seg", "depth"),)
    budgets: tuple[float, ...] = (0.5, 0.3)
    seeds: tuple[int, ...] = (0, 1, 2)
    shifts: tuple[str, ...] = tuple(SHIFTS)
    n_calib: int = 512  # the server's clean calibration images
    n_val: int = 256  # validation scenes (scored clean and under each shift)
    n_device: int = 256  # the images a device summarises (and the oracle is tailored on)
    recovery_steps: int = QUICK_RECOVERY.steps  # (a) and (c): the quick build's recovery, run in full
    adapt: AdaptOptions = field(default_factory=AdaptOptions)
    oracle_bn: bool = True  # the oracle's base re-estimates its BatchNorm on the shifted images first


@dataclass
class Row:
    """One model scored on one validation set: Δm in % against the full model on clean scenes."""

    tasks: tuple[str, ...]
    budget: float
    seed: int
    shift: str  # the shift the device sees (NONE: unshifted)
    kind: str  # one of KINDS
    delta_m: float
    metrics: Metrics
    summary_bytes: int = 0  # (b): the StatsSummary as sent
    seconds: float = 0.0  # how long making this model took
    camera: dict[str, float] = field(default_factory=dict)  # (b): the camera the search found
    method: str = ""  # (b): what the adaptation chose ("none", "adabn", "restyle"; cut/adapt.py)
    shift_distance: float = float("nan")  # (b): the summary's distance to the calibration images'


@dataclass
class AdaptResult:
    cfg: AdaptBenchConfig
    rows: list[Row]
    seconds: float = 0.0
    command: str = ""
    machine: str = ""
    load: tuple[float, float] = (0.0, 0.0)
    torch_threads: int = 1
    cases_done: int = 0  # (task set, budget, seed) cases finished: fewer than `cases_asked` in a partial run
    cases_asked: int = 0


def device_summary(stats_onnx: Path, images: torch.Tensor) -> tuple[Layers, int]:
    """What a device sends for `images`, as the agent makes it: the statistics model run by onnxruntime in
    batches of 16, accumulated, serialised; the layers the server reads back and the bytes sent."""
    session = ort.InferenceSession(str(stats_onnx), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    acc = Accumulator()
    for batch in images.split(DEVICE_BATCH):
        x = np.ascontiguousarray(batch.numpy(), dtype=np.float32)
        acc.add(dict(zip(names, session.run(None, {"image": x}), strict=True)), len(batch))
    msg = to_proto(acc.layers(), "bench-device", "0" * 64, acc.images, 1, int(time.time() * 1000))
    wire = msg.SerializeToString()
    return from_proto(type(msg).FromString(wire)), len(wire)


def test_time_bn(model: MultiTaskModel, specs: dict[str, TaskSpec], data: TensorSamples) -> Metrics:
    """(d): every BatchNorm normalises each batch of 16 by that batch's own statistics."""
    m = copy.deepcopy(model).eval()
    for mod in m.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.train()
    return evaluate_fn(m, specs, data, batch_size=DEVICE_BATCH)


def run(
    cfg: AdaptBenchConfig, show_progress: bool = True, on_case: Callable[[AdaptResult], None] | None = None
) -> AdaptResult:
    """Every case of `cfg`; `on_case` gets the result so far after each (task set, budget, seed) case,
    seeds outermost, so that an interrupted run still holds whole cases of every budget."""
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    engine = load_engine(cfg.checkpoint, cfg.data_dir, n_calib=cfg.n_calib, n_val=cfg.n_val, refine_steps=())
    if not isinstance(engine.val, TensorSamples) or not isinstance(engine.calib, TensorSamples):
        raise ConfigError("bench adapt needs the reference's synthetic calibration and validation scenes")
    device_scenes = synthetic_scenes(
        cfg.n_device, DEVICE_SEED, engine.base.input_size, scenes_cache(cfg.data_dir), show_progress=False
    )
    shifts = [s for s in cfg.shifts if s != NONE]
    cases = [(t, b, s) for s in cfg.seeds for t in cfg.task_sets for b in cfg.budgets]
    rows: list[Row] = []
    done = 0

    def result(done: int) -> AdaptResult:
        return AdaptResult(
            cfg,
            list(rows),
            time.perf_counter() - t0,
            machine=f"{platform.machine()}, {os.cpu_count()} cores",
            load=(load0, os.getloadavg()[0]),
            torch_threads=torch.get_num_threads(),
            cases_done=done,
            cases_asked=len(cases),
        )

    work = Path(tempfile.mkdtemp(prefix="bench-adapt-"))
    try:
        with progress_bar(
            "bench adapt", total=len(cases) * (1 + len(shifts)), enabled=show_progress
        ) as advance:
            for tasks, budget, seed in cases:
                case = _Case(cfg, engine.base, engine.calib, engine.val, tasks, budget, seed)
                said = f"{'+'.join(tasks)} macs {budget:g} seed {seed}"
                rows += case.unshifted(device_scenes, work)
                advance(1, case=said, shift=NONE)
                for name in shifts:
                    rows += case.shifted(name, device_scenes)
                    advance(1, case=said, shift=name)
                done += 1
                if on_case is not None:
                    on_case(result(done))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result(len(cases))


class _Case:
    """One task set, budget and seed: its fleet model, then every shift's four models scored."""

    def __init__(
        self,
        cfg: AdaptBenchConfig,
        base: MultiTaskModel,
        calib: TensorSamples,
        val: TensorSamples,
        tasks: tuple[str, ...],
        budget: float,
        seed: int,
    ) -> None:
        self.cfg, self.base, self.calib, self.val = cfg, base, calib, val
        self.tasks, self.budget, self.seed = tasks, budget, seed
        self.teacher = decompose(base, list(tasks))
        self.specs = self.teacher.task_specs
        self.clean_ref = evaluate(self.teacher, self.specs, val)
        self.fleet, self.fleet_s = self.tailored(calib)
        self.stats_onnx: Path | None = None

    def tailored(self, calib: TensorSamples, oracle: bool = False) -> tuple[MultiTaskModel, float]:
        """The engine's tailoring (quick-build recovery, run in full) on `calib`; the oracle's base model
        first re-estimates its BatchNorm on them too (with the device's images in hand, the server would:
        else its teacher labels the shifted images as badly as the fleet's model does)."""
        t1 = time.perf_counter()
        base = self.base
        if oracle and self.cfg.oracle_bn:
            base = copy.deepcopy(self.base)
            recalibrate_batchnorm(base, calib, n_batches=8, batch_size=32)
        torch.manual_seed(self.seed)
        steps = self.cfg.recovery_steps
        recovery = RecoveryOptions(steps=steps, features=QUICK_RECOVERY.features, seed=self.seed)
        opts = TailorOptions(recovery=recovery if steps else None, seed=self.seed)
        report = tailor(base, list(self.tasks), Budget(macs_fraction=self.budget), calib, opts)
        return report.model, time.perf_counter() - t1

    def row(self, model: MultiTaskModel, data: TensorSamples, shift: str, kind: str, **extra: Any) -> Row:
        metrics = evaluate(model, self.specs, data)
        dm = delta_m(metrics, self.clean_ref, self.specs)
        return Row(self.tasks, self.budget, self.seed, shift, kind, dm, metrics, **extra)

    def adapted(
        self, images: torch.Tensor, data: TensorSamples, shift: str, kinds: tuple[str, ...]
    ) -> list[Row]:
        """(b) and AdaBN alone from the summary of `images`, scored on `data`."""
        assert self.stats_onnx is not None
        layers, size = device_summary(self.stats_onnx, images)
        out = []
        for kind in kinds:
            opts = replace(
                self.cfg.adapt if kind == ADAPTED else AdaptOptions(method="adabn"), seed=self.seed
            )
            t1 = time.perf_counter()
            rep = adapt(self.fleet, self.teacher, layers, self.calib, opts)
            spent = time.perf_counter() - t1
            out.append(
                self.row(
                    rep.model,
                    data,
                    shift,
                    kind,
                    summary_bytes=size,
                    seconds=spent,
                    camera=rep.camera,
                    method=rep.method,
                    shift_distance=rep.shift,
                )
            )
        return out

    def unshifted(self, device_scenes: TensorSamples, work: Path) -> list[Row]:
        """(a) and (b) on clean scenes: a device seeing what the fleet sees must not lose by adapting."""
        self.stats_onnx = export_statistics_model(self.fleet, work / f"stats-{self.seed}.onnx")
        images = device_scenes.tensors["image"]
        clean = images.float() / 255.0 if images.dtype == torch.uint8 else images
        return [
            self.row(self.fleet, self.val, NONE, FLEET, seconds=self.fleet_s),
            *self.adapted(clean, self.val, NONE, (ADAPTED,)),
        ]

    def shifted(self, name: str, device_scenes: TensorSamples) -> list[Row]:
        device = shifted(device_scenes, name, self.seed)
        val = shifted(self.val, name, self.seed + 1000)
        rows = [self.row(self.fleet, val, name, FLEET, seconds=self.fleet_s)]
        rows += self.adapted(device.tensors["image"], val, name, (ADAPTED, ADABN))
        oracle, oracle_s = self.tailored(TensorSamples({"image": device.tensors["image"]}), oracle=True)
        rows.append(self.row(oracle, val, name, ORACLE, seconds=oracle_s))
        tt = test_time_bn(self.fleet, self.specs, val)
        rows.append(
            Row(
                self.tasks,
                self.budget,
                self.seed,
                name,
                TEST_TIME,
                delta_m(tt, self.clean_ref, self.specs),
                tt,
            )
        )
        return rows
