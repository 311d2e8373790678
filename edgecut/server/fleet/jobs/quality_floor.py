"""The quick model's quality floor: a model far below the full model is not offered while a refinement
may still replace it.

The quick build's recovery stops at a deadline (cut/refine.py), so on a busy machine it can ship a model
that lost most of its quality (a dashboard run on a loaded host: seg mIoU -63.7 %, normals -276 %).
Below `floor` (Δm % against the decomposed full model, on the engine's validation set, as the model's
metadata records it) and with refinements of its build key still to come, a model is *held*: the
devices waiting for it keep serving what they serve, are told why, and stay waiting for the key; the
refinement that passes the floor is offered to them, as is the last model of the key once no
refinement is left to come (a held model is then the best the key has, and the build's own floor,
`min_delta_m`, already let it through).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace

from edgecut.model_meta import ModelMeta
from edgecut.server.fleet.jobs.outcomes import Ready
from edgecut.server.fleet.jobs.refiner import NOT_BETTER  # the next one was queued from the same parent
from edgecut.server.fleet.jobs.rollout_policy import task_quality
from edgecut.server.fleet.state.job_record import refinement_key
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.schema import DONE, FAILED
from edgecut.server.spec import BuildSpec, spec_from_dict

logger = logging.getLogger(__name__)

QUICK_FLOOR = -25.0  # Δm (%); the server setting quick_min_delta_m


def model_delta_m(meta: ModelMeta) -> float | None:
    """Δm in % of a model against the full model, from its metadata (None: nothing measured)."""
    changes = [c for c in task_quality(meta).values() if c is not None]
    return 100.0 * sum(changes) / len(changes) if changes else None


class QualityFloor:
    def __init__(self, registry: Registry, floor: float, refinements: Callable[[BuildSpec], int]) -> None:
        self.registry, self.floor, self.refinements = registry, floor, refinements

    def apply(self, ready: Ready) -> Ready:
        """`ready`, `held` with the reason when it is below the floor and a refinement may still come."""
        if ready.held or math.isinf(self.floor):
            return ready
        dm = model_delta_m(ready.artifact.meta)
        if dm is None or dm >= self.floor or not self._more_to_come(ready):
            return ready
        what = "quick model" if ready.refinement == 0 else f"refinement {ready.refinement}"
        return replace(
            ready,
            held=f"{what} {dm:+.1f} % below the {self.floor:+.0f} % floor; waiting for the refined model",
        )

    def _more_to_come(self, ready: Ready) -> bool:
        """Whether a refinement after `ready` is queued, running, or will be queued (its predecessor
        was not better); False once the key's refinements ended, failed, or moved on."""
        rec = self.registry.jobs.get(ready.build_key)
        try:
            total = self.refinements(spec_from_dict(rec.spec)) if rec is not None else 0
        except Exception:  # a spec an older server wrote, an engine that no longer knows it
            logger.exception("refinements of %s unknown; not holding its model back", ready.build_key)
            return False
        follows = True  # the quick build (or the refinement) queues the next one when it is delivered
        for n in range(ready.refinement + 1, total + 1):
            job = self.registry.jobs.get(refinement_key(ready.build_key, n))
            if job is None:
                return follows
            if job.state not in (DONE, FAILED):
                return True
            if job.state == FAILED or job.stage != NOT_BETTER:
                return False
        return False
