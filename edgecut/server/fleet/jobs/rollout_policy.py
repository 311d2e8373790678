"""When a staged rollout promotes a new variant, and when it rolls it back: thresholds and pure verdicts.

A variant (a new artifact for the same device class, budget and tasks as a model devices already
serve: a new base model, a new pipeline version, a rebuilt model) is judged twice:

1. **Quality, before any device gets it**: for every task, the variant's relative change against the
   full model (the Δm convention: lower-is-better metrics sign-flipped, a fraction, negative = worse)
   must be at least `min_task_change`, and no worse than the model it replaces by more than
   `max_task_drop`. A task without measured metrics fails when `require_quality` is on. A variant that
   fails is *rejected*: no canary ever receives it.
2. **Canaries, on the devices**: `canary_fraction` of the cohort (at least `min_canaries`) get it first.
   Once every canary serves it and has answered `min_inferences` requests on it, and `observe_s` have
   passed since the last canary swapped, each canary's error rate must be at most `max_error_rate` and
   its p95 latency at most `max_p95_ratio` x the baseline p95 + `latency_slack_ms` (and at most
   `max_p95_ms` when set). The baseline p95 is the median of the rest of the cohort, which still serves
   the old model under the same conditions (else the cohort's p95 measured when the rollout began).
   A canary that refuses the variant (a failed swap) fails the rollout at once; canaries that have not
   shown enough traffic within `timeout_s` fail it too, since nothing was proven.

A refinement of the build a device serves is not a variant when it keeps that model's architecture
(`keeps_architecture`: the same method, parameters, MACs, inputs and outputs: the weights trained further); one
that does not (the engine's from-scratch candidate) is a variant like any other.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgecut.model_meta import ModelMeta
from edgecut.server.mtl.metric_names import DELTA_M_METRICS, task_change

CANARY, PROMOTED, ROLLED_BACK, REJECTED, SUPERSEDED = (
    "canary",
    "promoted",
    "rolled_back",
    "rejected",
    "superseded",
)
ROLLOUT_STATES = (CANARY, PROMOTED, ROLLED_BACK, REJECTED, SUPERSEDED)


def keeps_architecture(model: ModelMeta, parent: ModelMeta) -> bool:
    """Whether `model` is `parent`'s network with other weights: what a canary measures (latency,
    errors) would be the parent's, so only the validation set has anything to judge."""
    return (
        model.method == parent.method
        and model.params == parent.params
        and model.macs == parent.macs
        and model.input == parent.input
        and model.outputs == parent.outputs
    )


class RolloutSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(
        default=True, title="stage new variants through canaries (off: offer to all at once)"
    )
    canary_fraction: float = Field(
        default=0.25, gt=0, le=1, title="share of a cohort that gets a variant first"
    )
    min_canaries: int = Field(default=1, ge=1, title="at least this many canaries")
    observe_s: float = Field(default=60.0, ge=0, title="seconds to watch canaries after the last one swapped")
    min_inferences: int = Field(default=20, ge=1, title="requests each canary must answer on the variant")
    timeout_s: float = Field(default=1800.0, gt=0, title="roll back when canaries prove nothing by then")
    max_error_rate: float = Field(default=0.01, ge=0, le=1, title="failed / all requests on a canary")
    max_p95_ratio: float = Field(default=1.5, gt=0, title="canary p95 <= this x the baseline p95 (+ slack)")
    latency_slack_ms: float = Field(
        default=1.0, ge=0, title="added to the ratio bound: jitter of tiny models"
    )
    max_p95_ms: float | None = Field(default=None, gt=0, title="absolute p95 ceiling on canaries (optional)")
    min_task_change: float = Field(
        default=-0.5, title="per task, relative change vs the full model must be at least this (-0.5 = -50 %)"
    )
    max_task_drop: float = Field(
        default=0.05,
        ge=0,
        title="per task, at most this much worse than the model it replaces (0.05 = 5 points)",
    )
    require_quality: bool = Field(
        default=True, title="a task without measured metrics fails the quality gate"
    )


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str


def task_quality(meta: ModelMeta) -> dict[str, float | None]:
    """task -> relative change of the model's metrics against the full model (None: not measured)."""
    out: dict[str, float | None] = {}
    for task in meta.tasks:
        values, ref = meta.metrics.get(task), meta.reference_metrics.get(task)
        kind = meta.outputs[task].kind if task in meta.outputs else ""
        out[task] = task_change(values, ref, DELTA_M_METRICS.get(kind)) if values and ref else None
    return out


def judge_quality(candidate: ModelMeta, baseline: ModelMeta | None, s: RolloutSettings) -> Verdict:
    new = task_quality(candidate)
    old = task_quality(baseline) if baseline is not None else {}
    for task, change in new.items():
        if change is None:
            if s.require_quality:
                return Verdict(False, f"task {task}: no measured metrics (require_quality is on)")
            continue
        if change < s.min_task_change:
            return Verdict(
                False,
                f"task {task}: {change:+.1%} vs the full model, below the floor {s.min_task_change:+.1%}",
            )
        before = old.get(task)
        if before is not None and change < before - s.max_task_drop:
            return Verdict(
                False,
                f"task {task}: {change:+.1%} vs the full model, {before - change:.1%} worse than the model it "
                f"replaces ({before:+.1%}; at most {s.max_task_drop:.1%} allowed)",
            )
    return Verdict(True, "quality within thresholds")


@dataclass
class CanaryWatch:
    """What one canary showed on the variant: from its swap report and the telemetry after it."""

    swapped_at: float | None = None
    refused: str = ""  # the device's reason when it refused the variant
    first: tuple[int, int] | None = None  # (inferences, failures) in the first sample on the variant
    last: tuple[int, int] | None = None
    p95_ms: float = 0.0

    def observe(self, inferences: int, failures: int, p95_ms: float) -> None:
        if self.first is None or inferences < self.first[0]:  # counters restart when the agent does
            self.first = (inferences, failures)
        self.last, self.p95_ms = (inferences, failures), p95_ms

    @property
    def answered(self) -> int:
        if self.first is None or self.last is None:
            return 0
        return (self.last[0] - self.first[0]) + (self.last[1] - self.first[1])

    @property
    def error_rate(self) -> float:
        if self.first is None or self.last is None or self.answered == 0:
            return 0.0
        return (self.last[1] - self.first[1]) / self.answered


def baseline_p95(control: Mapping[str, float], at_start: float) -> float:
    """The median p95 of the devices still on the old model, else the cohort's p95 when the rollout began."""
    live = [v for v in control.values() if v > 0]
    return statistics.median(live) if live else at_start


def judge_canaries(
    watches: Mapping[str, CanaryWatch], base_p95: float, started: float, now: float, s: RolloutSettings
) -> Verdict | None:
    """The canaries' verdict, or None while there is not enough to decide yet."""
    for device, w in sorted(watches.items()):
        if w.refused:
            return Verdict(False, f"canary {device} refused the variant: {w.refused}")
    for device, w in sorted(watches.items()):
        if w.answered >= s.min_inferences and w.error_rate > s.max_error_rate:
            return Verdict(
                False, f"canary {device}: error rate {w.error_rate:.1%} above {s.max_error_rate:.1%}"
            )
        bound = math.inf
        if base_p95 > 0:
            bound = s.max_p95_ratio * base_p95 + s.latency_slack_ms
        if s.max_p95_ms is not None:
            bound = min(bound, s.max_p95_ms)
        if w.answered >= s.min_inferences and w.p95_ms > bound:
            return Verdict(
                False,
                f"canary {device}: p95 {w.p95_ms:.1f} ms above the bound {bound:.1f} ms "
                f"(baseline p95 {base_p95:.1f} ms)",
            )
    ready = all(w.swapped_at is not None and w.answered >= s.min_inferences for w in watches.values())
    last_swap = max((w.swapped_at or 0.0 for w in watches.values()), default=0.0)
    if ready and now - last_swap >= s.observe_s:
        worst = max((w.p95_ms for w in watches.values()), default=0.0)
        return Verdict(
            True, f"canaries within thresholds (worst p95 {worst:.1f} ms, baseline {base_p95:.1f} ms)"
        )
    if now - started > s.timeout_s:
        return Verdict(
            False, f"canaries showed too little traffic on the variant within {s.timeout_s:g} s to prove it"
        )
    return None


def canary_count(cohort_size: int, s: RolloutSettings) -> int:
    return min(cohort_size, max(s.min_canaries, math.ceil(s.canary_fraction * cohort_size)))


def pick_canaries(
    members: list[dict[str, Any]], asking: str, s: RolloutSettings
) -> tuple[list[str], list[str]]:
    """The cohort's device ids (the asking device when none is recorded yet) and its canaries, online first."""
    ids = [d["device_id"] for d in members] or [asking]
    online = [d["device_id"] for d in members if d["status"] == "online"]
    return ids, (online + [d for d in ids if d not in online])[: canary_count(len(ids), s)]


def cohort_p95(members: list[dict[str, Any]], baseline: str) -> float:
    """The median p95 latency the cohort's devices report on `baseline` (0 when none does yet)."""
    p95s = sorted(
        v
        for d in members
        if d["telemetry"].get("artifact_id") == baseline
        and (v := float(d["telemetry"].get("latency_p95_ms", 0.0))) > 0
    )
    return p95s[len(p95s) // 2] if p95s else 0.0
