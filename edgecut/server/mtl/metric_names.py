"""Which metric each task kind reports first, which are lower-is-better, and one task's relative change.

Torch-free, so the fleet service and the dashboard can compare a tailored model's metrics with the
full model's without importing the training stack (edgecut.server.mtl.metrics re-exports these).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

LOWER_IS_BETTER = frozenset({"abs_err", "rel_err", "rmse", "mean_angle", "median_angle"})
PRIMARY = {  # the metric shown first for each kind, e.g. in compact tables
    "segmentation": "miou",
    "depth": "abs_err",
    "regression": "abs_err",
    "normals": "mean_angle",
    "edges": "f1",
    "classification": "accuracy",
}
DELTA_M_METRICS = {  # the metrics that enter Δm, per task kind (precision/recall are folded into f1)
    "segmentation": ("miou", "pixel_acc"),
    "depth": ("abs_err", "rel_err"),
    "regression": ("abs_err", "rmse"),
    "normals": ("mean_angle", "median_angle", "within_11.25", "within_22.5", "within_30"),
    "edges": ("f1",),
    "classification": ("accuracy",),
}


def no_better(key: str, value: float, reference: float) -> bool:
    """Whether `value` of metric `key` is not better than `reference` (equal, or NaN, is not better)."""
    return not (value < reference) if key in LOWER_IS_BETTER else not (value > reference)


def task_change(
    values: Mapping[str, float], reference: Mapping[str, float], keys: Iterable[str] | None = None
) -> float | None:
    """Mean relative change of one task's metrics against the reference (a fraction; negative = worse).

    Lower-is-better metrics are sign-flipped; metrics missing on either side, or with a zero or NaN
    reference, are skipped; None when nothing is comparable.
    """
    changes = []
    for k in keys if keys is not None else [k for k in values if k in reference]:
        if k not in values or k not in reference or reference[k] == 0 or math.isnan(reference[k]):
            continue
        sign = -1.0 if k in LOWER_IS_BETTER else 1.0
        changes.append(sign * (values[k] - reference[k]) / abs(reference[k]))
    return sum(changes) / len(changes) if changes else None
