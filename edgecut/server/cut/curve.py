"""Δm against recovery time: how much quality each extra step of recovery buys back after pruning.

One pruned model per budget (scoring + pruning + BatchNorm re-estimation, as a build does it), then
for each schedule length a fresh copy is recovered with that many steps (each run has its own cosine
schedule, as a build with that many steps would) and evaluated against the full model on labelled
validation samples. The engine's quick and refined schedules are chosen from this curve
(docs/benchmarks.md, *Recovery curve*).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from torch.utils.data import Dataset

from edgecut.server.cut.balance import task_changes
from edgecut.server.cut.recover import RecoveryOptions, recover
from edgecut.server.cut.tailor import TailorOptions, tailor
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.data import Batch
from edgecut.server.mtl.evaluate import evaluate
from edgecut.server.mtl.metrics import delta_m
from edgecut.server.mtl.sources import labelled_tasks
from edgecut.server.spec import Budget


@dataclass(frozen=True)
class CurvePoint:
    macs: float  # the budget, as a fraction of the selected tasks' MACs
    features: bool  # trunk-feature distillation on (else outputs only)
    steps: int  # recovery steps run (may stop early on `seconds`)
    seconds: float  # recovery wall-clock
    delta_m: float  # in %, against the full model
    tasks: dict[str, float] = field(default_factory=dict)  # each task's change in %


def recovery_curve(
    base: MultiTaskModel,
    tasks: Sequence[str],
    calib: Dataset[Batch],
    val: Dataset[Batch],
    macs: Sequence[float] = (0.5, 0.3),
    steps: Sequence[int] = (0, 40, 80, 160, 320, 640),
    features: Sequence[float] = (0.0, 1.0),
    options: TailorOptions = TailorOptions(),
    recovery: RecoveryOptions = RecoveryOptions(),
    on_point: Callable[[CurvePoint], None] | None = None,
) -> list[CurvePoint]:
    """The curve for each budget x feature weight x schedule length (0 steps = BatchNorm only)."""
    specs = {t: s for t, s in base.task_specs.items() if t in tasks and t in labelled_tasks(val)}
    if not specs:
        raise ValueError(f"the validation data labels none of {', '.join(tasks)}: no curve can be measured")
    kinds = {t: s.kind for t, s in specs.items()}
    reference = evaluate(base, specs, val)
    points: list[CurvePoint] = []

    def point(model: MultiTaskModel, level: float, feat: float, n: int, seconds: float) -> None:
        metrics = evaluate(model, specs, val)
        p = CurvePoint(
            level,
            feat > 0,
            n,
            round(seconds, 2),
            round(delta_m(metrics, reference, specs), 2),
            {t: round(100 * c, 2) for t, c in task_changes(metrics, reference, kinds).items()},
        )
        points.append(p)
        if on_point is not None:
            on_point(p)

    for level in macs:
        rep = tailor(base, list(tasks), Budget(macs_fraction=level), calib, replace(options, recovery=None))
        point(rep.model, level, 0.0, 0, 0.0)
        for feat in features:
            for n in (s for s in steps if s > 0):
                student = copy.deepcopy(rep.model)
                done = recover(student, rep.teacher, calib, replace(recovery, steps=n, features=feat))
                point(student, level, feat, done.steps, done.seconds)
    return points


def curve_table(points: Sequence[CurvePoint]) -> str:
    """A markdown table: one row per point, each task's change as a column."""
    tasks = sorted({t for p in points for t in p.tasks})
    head = "| MACs | features | steps | recovery s | Δm % | " + " | ".join(f"{t} %" for t in tasks) + " |"
    rule = "|" + "---:|" * (5 + len(tasks))
    rows = [
        f"| {p.macs:g} | {'yes' if p.features else 'no'} | {p.steps} | {p.seconds:.1f} | {p.delta_m:+.2f} | "
        + " | ".join(f"{p.tasks.get(t, float('nan')):+.2f}" for t in tasks)
        + " |"
        for p in points
    ]
    return "\n".join([head, rule, *rows])
