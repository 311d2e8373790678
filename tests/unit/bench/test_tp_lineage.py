"""Torch-Pruning's rows in bench quality go through the training edgecut's shipped lineage gets: the same
BatchNorm re-estimation, the quick build's recovery, the refinement schedules, each kept only when better
on validation by the engine's margin (lineage.follow; checked with a recording fake of the recovery)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from edgecut.server.cut.decompose import decompose
from edgecut.server.cut.recover import RecoveryOptions, RecoveryReport
from edgecut.server.engine import load_engine
from edgecut.server.mtl import MultiTaskModel, build_model, checkpoint
from edgecut.server.mtl.data import TensorSamples
from edgecut.server.spec import NO_FLOOR
from edgecut_bench.lineage import Schedule, Stage, follow
from edgecut_bench.quality import QualityConfig, _Bench
from edgecut_bench.quality_rows import QUICK, TP_FINAL, TP_QUICK

TASKS = ("seg", "depth")
QUICK_OPTS = RecoveryOptions(steps=60, features=1.0)
REFINES = (RecoveryOptions(steps=400, lr=1.5e-3, seed=1), RecoveryOptions(steps=640, lr=1e-3, seed=2))


def _model() -> MultiTaskModel:
    torch.manual_seed(0)
    return build_model("resnet-mtl", input_size=32, widths=[16, 16, 32, 48], head_width=16)


@dataclass
class Call:
    options: RecoveryOptions
    start: float  # a fingerprint of the weights training started from
    bn_mean: float  # the first BatchNorm's running mean when training started


class Recorder:
    """Stands in for cut.recover.recover: records each call, then moves the weights by one so a later
    call shows which weights it started from."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def __call__(self, student, teacher, calib, options, on_step=None) -> RecoveryReport:
        bn = next(m for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d))
        self.calls.append(Call(options, _fingerprint(student), float(bn.running_mean.sum())))
        with torch.no_grad():
            next(student.parameters()).add_(1.0)
        return RecoveryReport(options.steps, 0.0, 1.0, 0.5)


def by_margin(candidate: Stage, current: Stage) -> bool:
    """A stand-in for the engine's rule: 0.25 points of Δm."""
    return candidate.delta_m >= current.delta_m + 0.25


def _fingerprint(model: torch.nn.Module) -> float:
    return float(next(model.parameters()).detach().sum())


def test_the_refinements_continue_from_the_last_shipped_model_and_ship_only_when_better_by_the_margin(
    scenes: TensorSamples,
) -> None:
    model = decompose(_model(), TASKS).eval()
    teacher = decompose(_model(), TASKS).eval()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    untouched = float(bn.running_mean.sum())
    start = _fingerprint(model)
    n = len(next(model.parameters()).view(-1))  # the fake adds 1 to each of these per training
    record = Recorder()
    # quick -5.0; refinement 1 -4.8 (+0.2: below the 0.25 margin, dropped); refinement 2 -4.0 (ships)
    scores = iter([-5.0, -4.8, -4.0])
    three = (*REFINES, RecoveryOptions(steps=800, seed=3))
    more = iter([-5.0, -4.8, -4.0, -3.9])  # ... and a third, +0.1 over refinement 2: dropped
    schedule = Schedule(8, 16, QUICK_OPTS, REFINES, by_margin)
    lineage = follow(model, teacher, scenes, schedule, lambda m: next(scores), train=record)

    assert [c.options for c in record.calls] == [QUICK_OPTS, *REFINES]
    assert record.calls[0].bn_mean != pytest.approx(untouched)  # BatchNorm re-estimated before recovery
    assert record.calls[0].start == pytest.approx(start)
    # both refinements start from the quick model's weights: the first one did not ship
    assert record.calls[1].start == pytest.approx(start + n)
    assert record.calls[2].start == pytest.approx(start + n)
    assert lineage.quick.model is model and lineage.quick.delta_m == -5.0 and lineage.quick.refinement == 0
    assert lineage.final.delta_m == -4.0 and lineage.final.refinement == 2
    assert _fingerprint(lineage.quick.model) == pytest.approx(start + n)  # a refinement trains a copy
    assert lineage.shipped == [2] and lineage.dropped == [(1, -4.8)]
    assert lineage.note() == "refinements 2 shipped; refinement 1 not shipped (Δm -4.80 %)"

    record = Recorder()
    model = decompose(_model(), TASKS).eval()
    lineage = follow(
        model, teacher, scenes, replace(schedule, refinements=three), lambda m: next(more), record
    )
    assert record.calls[3].start == pytest.approx(start + 2 * n)  # from refinement 2's weights
    assert lineage.final.refinement == 2 and lineage.dropped == [(1, -4.8), (3, -3.9)]


def test_without_a_quick_recovery_only_batchnorm_is_re_estimated_and_nothing_ships_without_gain(
    scenes: TensorSamples,
) -> None:
    model = decompose(_model(), TASKS).eval()
    record = Recorder()
    lineage = follow(model, model, scenes, Schedule(8, 16, None, REFINES, by_margin), lambda m: -3.0, record)
    assert [c.options for c in record.calls] == list(REFINES)
    assert lineage.final is lineage.quick and lineage.shipped == []
    assert lineage.note().startswith("no refinement shipped: the quick model")


def test_bench_quality_gives_torch_pruning_the_training_of_edgecuts_lineage(
    tmp_path: Path, scenes: TensorSamples, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One bench quality case with the recovery recorded everywhere it runs: each Torch-Pruning variant
    is trained with exactly the options edgecut's quick build and refinements used (the quick recovery
    for the steps the quick build reached, without its deadline), in the same order, and gets a quick and
    a final row."""
    record = Recorder()
    for where in ("edgecut.server.cut.tailor", "edgecut.server.engine", "edgecut_bench.lineage"):
        monkeypatch.setattr(f"{where}.recover", record)
    # this untrained model can lose half a task in steps of 16, and the engine would then build it again
    # in steps of 8 (a second recovery; the lineage follows the build that ships): one build here
    monkeypatch.setattr("edgecut.server.engine.TASK_COLLAPSE", 100.0)
    checkpoint.save(tmp_path / "model.pt", _model().eval())
    engine = load_engine(
        tmp_path / "model.pt",
        tmp_path,
        "synthetic",
        n_calib=32,
        n_val=16,
        train_data="off",
        min_delta_m=NO_FLOOR,
    )
    judged_int8: list[bool] = []
    ships = engine.ships

    def recording_ships(candidate, current, tasks, current_delta_m, int8=False):  # type: ignore[no-untyped-def]
        judged_int8.append(int8)
        return ships(candidate, current, tasks, current_delta_m, int8)

    monkeypatch.setattr(engine, "ships", recording_ships)
    cfg = QualityConfig(tmp_path / "model.pt", tmp_path, train_scenes=32, scratch_epochs=0.0)
    bench = _Bench(cfg, engine, lambda *a, **k: None, 0)
    try:
        case, _ = bench.case(TASKS, 0.5)
    finally:
        bench.close()

    per_lineage = 1 + len(engine.refine_schedules)
    assert len(record.calls) == per_lineage * (1 + len(TP_QUICK))
    edgecut = [replace(c.options, seconds=None) for c in record.calls[:per_lineage]]
    assert edgecut == [replace(engine.options.recovery, seconds=None), *engine.refine_schedules]  # type: ignore[arg-type]
    for i in range(len(TP_QUICK)):
        tp = record.calls[per_lineage * (i + 1) : per_lineage * (i + 2)]
        assert [c.options for c in tp] == edgecut
    # each Torch-Pruning refinement is judged as the engine judges its own: a quantisation-aware one in int8
    assert any(r.quantise for r in engine.refine_schedules)
    assert judged_int8 == [r.quantise for r in engine.refine_schedules] * len(TP_QUICK)
    quick = case.of(QUICK)[0]
    assert quick.recovery_steps == engine.options.recovery.steps  # type: ignore[union-attr]
    for q, f in zip(TP_QUICK, TP_FINAL, strict=True):
        (tp_quick,), (tp_final,) = case.of(q), case.of(f)
        assert tp_quick.label.endswith(", quick") and tp_final.label.endswith(", final")
        assert tp_quick.recovery_steps == quick.recovery_steps
        assert tp_quick.macs <= 0.5 * case.full.macs
        assert tp_final.elapsed >= tp_quick.elapsed
