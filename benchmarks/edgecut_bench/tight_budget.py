"""Where an image-level task loses at a tight budget: each task's change after pruning + BatchNorm
re-estimation and after recovery, and its distillation loss on the calibration and held-out images.

Issue 27's diagnosis (docs/benchmarks.md, *Generality*) comes from this script on the packaged
reference; one line per stage, so the stages can be compared across seeds and options:

    python -m edgecut_bench.tight_budget --tasks seg,count --macs 0.3 --steps 100 --seed 0
    python -m edgecut_bench.tight_budget --tasks seg,count --augment flip
    python -m edgecut_bench.tight_budget --tasks seg,count --priority count=4 --floor 0.9
    python -m edgecut_bench.tight_budget --tasks seg,count --weight count=5  # recovery loss weight
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from edgecut.server.cut.recover import RecoveryOptions, recover
from edgecut.server.cut.tailor import TailorOptions, decompose, tailor
from edgecut.server.mtl import checkpoint
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.data import Batch, batches, synthetic_scenes
from edgecut.server.mtl.evaluate import Metrics, evaluate
from edgecut.server.mtl.losses import distill_loss
from edgecut.server.mtl.metric_names import DELTA_M_METRICS, task_change
from edgecut.server.mtl.metrics import delta_m
from edgecut.server.paths import PACKAGED_REFERENCE
from edgecut.server.spec import Budget


def changes(metrics: Metrics, full: Metrics, model: MultiTaskModel) -> str:
    """Each task's change against the untailored model, in %, then Δm."""
    parts = []
    for t, spec in model.task_specs.items():
        c = task_change(metrics[t], full[t], DELTA_M_METRICS.get(spec.kind))
        parts.append(f"{t} {100 * (c or 0.0):+.2f} %")
    return ", ".join(parts) + f"; Δm {delta_m(metrics, full, model.task_specs):+.2f} %"


@torch.no_grad()
def distill_losses(
    student: MultiTaskModel, teacher: MultiTaskModel, data: Dataset[Batch], n_batches: int = 4
) -> str:
    """Each task's distillation loss (the recovery's own term) averaged over a few batches."""
    student.eval()
    sums = dict.fromkeys(student.task_names, 0.0)
    n = 0
    for b in itertools.islice(batches(data, 64), n_batches):
        pred, target = student(b["image"]), teacher(b["image"])
        for t in sums:
            sums[t] += float(distill_loss(student.task_specs[t], pred[t], target[t]))
        n += 1
    return ", ".join(f"{t} {v / max(n, 1):.4f}" for t, v in sums.items())


def run(args: argparse.Namespace) -> list[str]:
    base = checkpoint.load(args.checkpoint)
    size = base.input_size
    calib = synthetic_scenes(args.calib, 7, size, args.cache_dir, show_progress=False)
    val = synthetic_scenes(args.val, 1000, size, args.cache_dir, show_progress=False)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    teacher = decompose(base, tasks)
    full = evaluate(teacher, teacher.task_specs, val)
    priorities = {k: float(v) for k, v in (p.split("=", 1) for p in args.priority)}
    options = TailorOptions(recovery=None, seed=args.seed, task_floor=args.floor)
    rep = tailor(base, tasks, Budget(macs_fraction=args.macs), calib, options, priorities or None)
    lines = [
        f"{'+'.join(tasks)} macs={args.macs:g} seed={args.seed} augment={args.augment} "
        f"features={args.features:g} floor={args.floor:g} "
        f"priorities={priorities or '-'} weights={args.weight or '-'}: MACs kept "
        f"{rep.pruned.macs / rep.selected.macs:.3f}, params kept {rep.pruned.params / rep.selected.params:.3f}",
        f"after pruning + BatchNorm: {changes(evaluate(rep.model, rep.model.task_specs, val), full, teacher)}",
    ]
    if args.steps > 0:
        weights = tuple((k, float(v)) for k, v in (w.split("=", 1) for w in args.weight))
        opts = RecoveryOptions(
            steps=args.steps,
            seed=args.seed,
            augment=args.augment,
            task_weights=weights,
            features=args.features,
        )
        recover(rep.model, rep.teacher, calib, opts)
        after = evaluate(rep.model, rep.model.task_specs, val)
        lines += [
            f"after {args.steps} recovery steps: {changes(after, full, teacher)}",
            f"distillation loss, calibration images: {distill_losses(rep.model, rep.teacher, calib)}",
            f"distillation loss, held-out images: {distill_losses(rep.model, rep.teacher, val)}",
        ]
    return lines


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--checkpoint", type=Path, default=PACKAGED_REFERENCE)
    p.add_argument("--tasks", default="seg,count")
    p.add_argument("--macs", type=float, default=0.3)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", choices=("none", "flip"), default="none")
    p.add_argument(
        "--features", type=float, default=0.0, help="weight of trunk-feature distillation (the engine uses 1)"
    )
    p.add_argument("--floor", type=float, default=0.0, help="per-task importance floor (cut/shares.py)")
    p.add_argument("--priority", action="append", default=[], help="task=weight for the fusion (repeatable)")
    p.add_argument(
        "--weight", action="append", default=[], help="task=weight of its recovery loss (repeatable)"
    )
    p.add_argument("--calib", type=int, default=512, help="calibration scenes (scoring, BatchNorm, recovery)")
    p.add_argument("--val", type=int, default=300, help="held-out scenes")
    p.add_argument("--cache-dir", type=Path, default=Path(".edgecut/scenes"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    torch.set_num_threads(1)
    for line in run(parser().parse_args(argv)):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
