"""The training edgecut's shipped lineage gets, applied to a model pruned some other way (Torch-Pruning),
so that a baseline row and edgecut's row differ only in how channels were chosen.

The engine's lineage (engine.py, cut/refine.py): BatchNorm statistics re-estimated on calibration images,
the quick build's recovery (distillation), shipped; then each refinement schedule continues from the
weights of the last *shipped* model and ships only when the engine's rule says so (cut/shipping.py: its
Δm gain over that model, paired over the validation images, has a 95 % lower bound above 0; a refinement
that does not is dropped, and the next one starts from the last shipped weights again). `follow` runs
exactly that on any pruned model and says which model is the quick one and which the final one.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch.utils.data import Dataset

from edgecut.server.cut.recover import RecoveryOptions, recalibrate_batchnorm, recover
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.data import Batch

if TYPE_CHECKING:
    from edgecut.server.engine import TorchEngine

# recover(student, teacher, calib, options): trains `student` in place
Train = Callable[[MultiTaskModel, MultiTaskModel, Dataset[Batch], RecoveryOptions], object]


@dataclass(frozen=True)
class Schedule:
    """The engine's training after pruning: what `TorchEngine.build` and `TorchEngine.refine` run."""

    bn_batches: int  # TailorOptions.bn_batches
    batch_size: int  # TailorOptions.batch_size
    quick: RecoveryOptions | None  # the quick build's recovery (None or 0 steps: BatchNorm only)
    refinements: tuple[RecoveryOptions, ...]  # the engine's distillation refinements, in order
    # the engine's shipping rule: does the candidate (first) replace the last shipped model (second)?
    ships: Callable[[Stage, Stage], bool]


@dataclass
class Stage:
    model: MultiTaskModel
    delta_m: float  # on the validation set, as the engine judges it
    seconds: float  # wall clock from the start of `follow` to this model
    refinement: int  # 0: the quick model


@dataclass
class Lineage:
    quick: Stage
    final: Stage  # the last shipped model (the quick one when no refinement shipped)
    shipped: list[int] = field(default_factory=list)  # refinement numbers that shipped
    dropped: list[tuple[int, float]] = field(default_factory=list)  # (refinement, its Δm) not shipped
    seconds: float = 0.0  # the whole lineage's wall clock, refinements not shipped included

    def note(self) -> str:
        """The final row's note: which refinements shipped and which did not, with their Δm."""
        said = (
            "refinements " + ", ".join(map(str, self.shipped)) + " shipped"
            if self.shipped
            else "no refinement shipped: the quick model"
        )
        said += "".join(f"; refinement {n} not shipped (Δm {dm:+.2f} %)" for n, dm in self.dropped)
        return said


def follow(
    model: MultiTaskModel,
    teacher: MultiTaskModel,
    calib: Dataset[Batch],
    schedule: Schedule,
    score: Callable[[MultiTaskModel], float],
    train: Train | None = None,
) -> Lineage:
    """Train the pruned `model` (in place, it becomes the quick model) the way the engine trains its own
    pruned model; `score` gives a model's Δm on the validation set, `train` defaults to the engine's
    recover."""
    train = train or recover
    t0 = time.perf_counter()
    recalibrate_batchnorm(model, calib, schedule.bn_batches, schedule.batch_size)
    if schedule.quick is not None and schedule.quick.steps > 0:
        train(model, teacher, calib, schedule.quick)
    model.eval()
    quick = Stage(model, score(model), time.perf_counter() - t0, 0)
    lineage = Lineage(quick, quick)
    for number, options in enumerate(schedule.refinements, start=1):
        student = copy.deepcopy(lineage.final.model)
        train(student, teacher, calib, options)
        student.eval()
        dm = score(student)
        candidate = Stage(student, dm, time.perf_counter() - t0, number)
        if schedule.ships(candidate, lineage.final):
            lineage.final = candidate
            lineage.shipped.append(number)
        else:
            lineage.dropped.append((number, dm))
    lineage.seconds = time.perf_counter() - t0
    return lineage


@contextmanager
def judging_all(engine: TorchEngine) -> Iterator[None]:
    """The engine returns every refinement it scores, shipped or not (`TorchEngine.judge_only`), so a
    bench can show the figures of one the engine would drop; its verdict stays in the build's extras."""
    engine.judge_only = True
    try:
        yield
    finally:
        engine.judge_only = False
