"""Progressive delivery on the engine side: the schedules, where a build keeps its pruned student, and
when a refined model is worth shipping.

The quick build ships after a short recovery and leaves its student's weights in
`work_dir/refine/<build key>.r0.pt`; refinement n continues from refinement n-1's weights with a longer
distillation from the original model (outputs and trunk features); it replaces its parent only when
better beyond the validation set's noise (shipping.py). Only weights are stored (loaded
with `weights_only=True`, no pickled code): the pruned architecture is re-derived by re-running the
quick pruning with the same seeds, fusion weights and channel steps (a build that fell back to finer steps
is found by its recorded size), so a restarted server or another replica can
refine too; when the file is missing or no longer fits, refinement starts from the re-derived pruned
model (BatchNorm re-estimated) instead.

The schedules were chosen from the measured recovery curve (docs/benchmarks.md, *Recovery curve*).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from edgecut.server.cut.recover import RecoveryOptions
from edgecut.server.mtl.metrics import delta_m
from edgecut.server.mtl.tasks import TaskSpec

logger = logging.getLogger(__name__)

# Quick: what fits a build of <= 15 s on 2 cores for the reference model (scoring + pruning +
# BatchNorm ~2 s, evaluation + export ~1.5 s); `seconds` caps it on a slower or busier machine.
QUICK_RECOVERY = RecoveryOptions(steps=60, seconds=8.0, features=1.0)
# ... and whatever the machine's load, its recovery stops once tailoring has taken this long, leaving
# ~2-3 s of the 15 s for validation and export (TailorOptions.deadline_s)
QUICK_DEADLINE_S = 12.0
# Refinements continue from the previous weights with a fresh cosine schedule at a lower rate.
# The second is 640 steps, not 800: with three tasks on 2 cores 800 steps put it at 307-327 s from the
# request, past the 5 minutes a refined model should take (docs/benchmarks.md, *Quality at budget*).
# The third is quantisation-aware (fake_quant.py): 300 steps at a low rate with the weights and layer
# inputs rounded as onnxruntime's static INT8 rounds them and BatchNorm frozen. On a tailored
# seg+depth+normals model (macs 0.5, 1100 steps of distillation before) it reached Δm -2.27 % in INT8
# where 300 more plain steps reached -2.61 % (fp32: -2.25 against -2.68 %).
REFINEMENTS: tuple[RecoveryOptions, ...] = (
    RecoveryOptions(steps=400, lr=1.5e-3, features=1.0, seed=1),
    RecoveryOptions(steps=640, lr=1e-3, features=1.0, seed=2),
    RecoveryOptions(steps=300, lr=3e-4, features=1.0, seed=3, quantise=True),
)
# a refinement ships only when it beats its parent beyond the validation set's noise: cut/shipping.py


def student_path(work_dir: Path, build_key: str, refinement: int) -> Path:
    return work_dir / "refine" / f"{build_key}.r{refinement}.pt"


def save_student(path: Path, model: torch.nn.Module) -> None:
    """The weights only, written atomically (a crash never leaves half a file under the final name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)


def restore_student(path: Path, model: torch.nn.Module) -> bool:
    """Load saved weights into `model` (the re-derived architecture); False when there are none or
    they do not fit it (the model is then left as it was)."""
    if not path.exists():
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        current = model.state_dict()
        if set(state) != set(current) or any(state[k].shape != current[k].shape for k in current):
            logger.warning("saved student %s does not fit the re-derived architecture; starting anew", path)
            return False
        model.load_state_dict(state)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:  # a damaged file is skipped, not fatal
        logger.warning("cannot read saved student %s (%s); starting anew", path, exc)
        return False
    return True


def quality(
    metrics: Mapping[str, Mapping[str, float]],
    reference: Mapping[str, Mapping[str, float]],
    specs: Mapping[str, TaskSpec],
) -> float | None:
    """Δm in % over the tasks both sides measured, None when none are."""
    tasks = [t for t in metrics if t in reference and t in specs]
    if not tasks:
        return None
    return delta_m(
        {t: dict(metrics[t]) for t in tasks},
        {t: dict(reference[t]) for t in tasks},
        {t: specs[t] for t in tasks},
    )
