"""`tailor()`: one pre-trained multi-task model + the tasks a device needs + a budget -> a compact
model for exactly those tasks (decompose, score per task, fuse, prune channels, recover).

Ranking: with `cost="auto"` (the default), a budget with a MACs limit ranks channels by importance per
MAC they cost, so the budget is met by giving up the least quality per unit of compute (a parameter
budget keeps the plain importance ranking); see docs/benchmarks.md, *Generality*, for the measured
difference.
"""

from __future__ import annotations

import copy
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch.utils.data import Dataset

from edgecut.server.cut.cost import CostKind
from edgecut.server.cut.decompose import decompose
from edgecut.server.cut.fusion import FUSIONS
from edgecut.server.cut.groups import ROUND_TO
from edgecut.server.cut.importance import CRITERIA, ScoreInputs, detach_all, group_combine, score
from edgecut.server.cut.objective import Objective, Target
from edgecut.server.cut.prune import ChannelPruner, Size, impossible, measure, size_target
from edgecut.server.cut.prune import Target as SizeTarget
from edgecut.server.cut.recover import RecoveryOptions, RecoveryReport, recalibrate_batchnorm, recover
from edgecut.server.errors import BuildError, DatasetError
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.data import Batch, batches
from edgecut.server.spec import Budget, ProgressFn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TailorOptions:
    """How `tailor` scores, fuses, prunes and recovers; the defaults are edgecut's CUT method without
    recovery (pass `recovery=RecoveryOptions(...)` to distil the pruned model)."""

    criterion: str = "taylor"
    fusion: str = "vote"
    target: Target = "distill"
    calib_batches: int = 4
    batch_size: int = 32
    projections: int = 2
    recovery: RecoveryOptions | None = None
    bn_batches: int = 8  # calibration batches to re-estimate BatchNorm statistics after pruning (0 = off)
    min_fraction: float = 0.05  # every layer keeps at least this share of its channels
    min_channels: int = 1
    round_to: int = ROUND_TO  # layer widths stay multiples of 16 (onnxruntime's fast paths, groups.py)
    # rank by importance per unit of cost: "auto" = per MAC when the budget limits MACs, else plain
    cost: Literal["auto", "macs", "params", "none"] = "auto"
    cost_power: float = 1.0  # importance / cost**power
    # every kept task keeps at least this share of its own importance (shares.py; 0 = off)
    task_floor: float = 0.0
    seed: int = 0
    # the recovery stops when tailoring has taken this long (None = only its own steps / seconds):
    # the quick build's time goal holds on a busy machine, where scoring and pruning take longer
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise ValueError(
                f"unknown criterion {self.criterion!r}: choose one of {', '.join(sorted(CRITERIA))}"
            )
        if self.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {self.fusion!r}: choose one of {', '.join(sorted(FUSIONS))}")
        if self.cost not in ("auto", "macs", "params", "none"):
            raise ValueError(f"unknown cost {self.cost!r}: choose auto, macs, params or none")

    def method_name(self) -> str:
        return f"{self.criterion}+{self.fusion}/{self.target}"

    def cost_kind(self, target: SizeTarget) -> CostKind | None:
        if self.cost == "auto":
            return "macs" if target.max_macs is not None else None
        return None if self.cost == "none" else self.cost


@dataclass
class TailorReport:
    """The tailored `model` (eval mode) for `tasks`, its size before and after, and where the time went."""

    model: MultiTaskModel
    teacher: MultiTaskModel  # the decomposed original, for comparison
    tasks: list[str]
    full: Size  # the original model with every task
    selected: Size  # after decomposition, before pruning
    pruned: Size
    seconds: dict[str, float] = field(default_factory=dict)
    recovery: RecoveryReport | None = None


def _noop(stage: str, fraction: float, detail: str) -> None:
    return None


def tailor(
    base: MultiTaskModel,
    tasks: Sequence[str],
    budget: Budget,
    calib: Dataset[Batch],
    options: TailorOptions = TailorOptions(),
    priorities: dict[str, float] | None = None,
    progress: ProgressFn = _noop,
) -> TailorReport:
    """Tailor `base` to `tasks` within `budget`: decompose, score channels per task on `calib` images,
    fuse (`priorities` weigh tasks), prune to the budget, re-estimate BatchNorm, recover.

    `base` is left as it is. Raises ImpossibleBudgetError (naming the smallest budget that fits),
    BuildError when torch-pruning cannot follow the model, DatasetError when labelled scoring lacks labels.
    """
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    full = measure(base, base.input_size)
    teacher = decompose(base, tasks)
    student = copy.deepcopy(teacher)
    selected = measure(student, student.input_size)
    target = size_target(budget, selected)

    progress("importance", 0.05, f"scoring channels per task ({options.criterion}, {options.target})")
    calib_batches = list(itertools.islice(batches(calib, options.batch_size), options.calib_batches))
    _check_labels(calib_batches, student.task_names, options)
    objective = Objective(student.task_specs, options.target, options.projections, options.seed)
    scores = detach_all(
        score(options.criterion, ScoreInputs(student, calib_batches, objective, options.seed))
    )
    seconds["importance"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    weights = torch.tensor([float((priorities or {}).get(t, 1.0)) for t in student.task_names])
    progress("pruning", 0.15, "removing channels")
    pruner: ChannelPruner | None = None
    # widths in steps of `round_to` run fastest; a model too narrow to meet the budget that way (layers
    # of 16-31 channels) is pruned again from the same scores in finer steps
    widths = sorted({r for r in (options.round_to, 8, 4, 1) if r <= options.round_to}, reverse=True)
    untouched = copy.deepcopy((student, scores)) if len(widths) > 1 else (student, scores)
    try:
        for i, round_to in enumerate(widths):
            if i:
                student, scores = copy.deepcopy(untouched)
                logger.info(
                    "pruning again in steps of %d channels: steps of %d cannot meet %s",
                    round_to,
                    widths[i - 1],
                    budget.bucket(),
                )
            pruner = ChannelPruner(
                student,
                options.min_channels,
                options.min_fraction,
                round_to,
                cost=options.cost_kind(target),
                cost_power=options.cost_power,
                combine=group_combine(options.criterion),
                task_floor=options.task_floor,
            )
            pruned = pruner.prune_to(
                scores,
                options.fusion,
                target,
                weights,
                on_step=lambda s, f: progress(
                    "pruning", 0.15 + 0.45 * f, f"{100 * f:.0f}% of the way, {s.macs / 1e6:.1f} MMACs"
                ),
            )
            if target.met(pruned):
                break
    # torch / torch-pruning on a model they cannot follow: one sentence, not a traceback
    except (RuntimeError, ValueError, IndexError, KeyError) as exc:
        line = (str(exc).strip().splitlines() or [""])[0]
        hint = (
            f"; torch-pruning cannot follow {', '.join(pruner.unwrapped)} (a parameter used outside a "
            "layer, e.g. by F.linear or einsum): hold it in an nn.Linear or nn.Conv2d"
            if pruner is not None and pruner.unwrapped
            else ""
        )
        raise BuildError(
            f"pruning {type(base).__name__} for {', '.join(student.task_names)} failed: "
            f"{type(exc).__name__}: {line[:300]}{hint}"
        ) from exc
    seconds["pruning"] = time.perf_counter() - t1
    if not target.met(pruned):
        raise impossible(budget.bucket(), selected, student, target)

    t1 = time.perf_counter()
    progress("pruning", 0.6, "re-estimating BatchNorm statistics")
    recalibrate_batchnorm(student, calib, options.bn_batches, options.batch_size)
    seconds["batchnorm"] = time.perf_counter() - t1
    report = TailorReport(student, teacher, student.task_names, full, selected, pruned, seconds)
    if options.recovery is not None and options.recovery.steps > 0:
        t2 = time.perf_counter()
        steps = options.recovery.steps
        report.recovery = recover(
            student,
            teacher,
            calib,
            _within_deadline(options.recovery, options.deadline_s, t2 - t0),
            on_step=lambda i, loss: (
                progress("recovery", 0.6 + 0.3 * i / steps, f"step {i}/{steps} loss {loss:.4f}")
                if i % 10 == 0 or i == steps
                else None
            ),
        )
        seconds["recovery"] = time.perf_counter() - t2
    student.eval()
    seconds["total"] = time.perf_counter() - t0
    return report


MIN_RECOVERY_S = 1.0  # past its deadline a build still recovers this long (BatchNorm alone is far worse)


def _within_deadline(recovery: RecoveryOptions, deadline_s: float | None, spent: float) -> RecoveryOptions:
    if deadline_s is None:
        return recovery
    left = max(MIN_RECOVERY_S, deadline_s - spent)
    return replace(recovery, seconds=min(recovery.seconds or left, left))


def _check_labels(calib: list[Batch], tasks: list[str], options: TailorOptions) -> None:
    """Labelled scoring needs every selected task's labels in the calibration data: say so up front."""
    if options.target != "labels" or not calib:
        return
    missing = [t for t in tasks if t not in calib[0]]
    if missing:
        raise DatasetError(
            f"scoring with labelled losses needs labels for {', '.join(missing)} in the calibration data: "
            "give a labelled folder (--calib-data) that has them, or a label-free method such as cut-vote"
        )
