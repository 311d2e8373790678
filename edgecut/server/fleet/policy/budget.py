"""Budget policy: what a device can afford, from its Resources (and optional targets) to a `Budget`.

1. The device class (`Resources.device_class`, e.g. ``rpi4``) selects a row of the table below;
   operators override or extend it in the server config (`budget.classes`).
2. An unknown or empty class falls back to a score from the probe: cores x GHz (frequency 0 means
   unknown: 1.5 GHz is assumed on ARM, 2.5 GHz elsewhere), fraction = 0.08 x score clamped to
   [0.15, 0.8], then capped to 0.25 below 1 GiB of RAM and 0.5 below 2 GiB.
3. `TaskNeeds.max_latency_ms` adds max_macs from the class's cost model (policy/latency.py: ms = a x
   MMACs + b, measured with onnxruntime on the server, scaled by the class's `macs_per_ms` relative to
   x86 and corrected from the agents' telemetry; without a measurement, latency x `macs_per_ms`),
   divided by the device's own slowdown once it drifted past its budget; `max_model_bytes` adds
   max_params = bytes / 4 (float32 weights). The engine then picks whichever limit is tighter, or
   refuses the build with IMPOSSIBLE_BUDGET when even the smallest model breaks it.

The default fractions and throughputs are conservative planning figures, not measurements; a fleet
with measured latencies should set its own table.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from edgecut.server.errors import ImpossibleBudgetError
from edgecut.server.fleet.policy.latency import LatencyModels
from edgecut.server.spec import Budget
from edgecut.v1 import fleet_pb2 as pb

logger = logging.getLogger(__name__)

GIB = 1 << 30
FALLBACK = "fallback"


class DeviceClassBudget(BaseModel):
    """One row of the policy table."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    macs_fraction: float = Field(gt=0, le=1, title="MACs kept, as a fraction of the selected-task model")
    params_fraction: float | None = Field(default=None, gt=0, le=1, title="parameters kept (optional)")
    macs_per_ms: float = Field(gt=0, title="assumed onnxruntime CPU throughput, MACs per millisecond")
    description: str = ""


DEFAULT_CLASSES: dict[str, DeviceClassBudget] = {
    "rpi3": DeviceClassBudget(macs_fraction=0.2, macs_per_ms=0.5e6, description="Raspberry Pi 3, 4x A53"),
    "rpi4": DeviceClassBudget(macs_fraction=0.3, macs_per_ms=1.5e6, description="Raspberry Pi 4, 4x A72"),
    "rpi5": DeviceClassBudget(macs_fraction=0.5, macs_per_ms=4e6, description="Raspberry Pi 5, 4x A76"),
    "jetson-nano": DeviceClassBudget(
        macs_fraction=0.5, macs_per_ms=2e6, description="Jetson Nano, 4x A57 (CPU provider)"
    ),
    "x86": DeviceClassBudget(macs_fraction=0.8, macs_per_ms=10e6, description="x86-64 desktop/server CPU"),
}


@dataclass(frozen=True)
class Decision:
    budget: Budget
    device_class: str  # the table row used, or "fallback"


class BudgetPolicy:
    """Resources (+ latency / size targets) -> Budget, from a per-class table with a probe fallback."""

    def __init__(
        self, classes: Mapping[str, DeviceClassBudget] | None = None, latency: LatencyModels | None = None
    ) -> None:
        self.classes: dict[str, DeviceClassBudget] = {**DEFAULT_CLASSES, **(classes or {})}
        self.latency = latency or LatencyModels({k: v.macs_per_ms for k, v in self.classes.items()})

    def row(self, resources: pb.Resources) -> tuple[str, DeviceClassBudget]:
        name = resources.device_class.strip().lower()
        if name in self.classes:
            return name, self.classes[name]
        if name:
            logger.info("device class %r is not in the budget table; using the probe fallback", name)
        return FALLBACK, _fallback_row(resources)

    def decide(
        self,
        resources: pb.Resources,
        max_latency_ms: float = 0.0,
        max_model_bytes: int = 0,
        slowdown: float = 1.0,
    ) -> Decision:
        """`slowdown` (>= 1): how much slower than its class this device proved (latency drift)."""
        name, row = self.row(resources)
        max_macs = max_params = None
        if max_latency_ms < 0 or max_latency_ms != max_latency_ms:  # negative or NaN
            raise ImpossibleBudgetError(f"max_latency_ms={max_latency_ms} must be a positive number or 0")
        if max_latency_ms > 0:
            try:
                max_macs = self.latency.max_macs(name, row.macs_per_ms, max_latency_ms, slowdown)
            except ImpossibleBudgetError as exc:
                raise ImpossibleBudgetError(f"{exc} (a {name} device)") from None
        if max_model_bytes > 0:
            max_params = max_model_bytes // 4
            if max_params < 1:
                raise ImpossibleBudgetError(
                    f"max_model_bytes={max_model_bytes} cannot hold a single float32 weight; allow more bytes"
                )
        budget = Budget(
            macs_fraction=row.macs_fraction,
            params_fraction=row.params_fraction,
            max_macs=max_macs,
            max_params=max_params,
        )
        return Decision(budget, name)


def _fallback_row(r: pb.Resources) -> DeviceClassBudget:
    arm = r.arch.lower().startswith(("arm", "aarch"))
    ghz = r.cpu_freq_mhz / 1000.0 if r.cpu_freq_mhz > 0 else (1.5 if arm else 2.5)
    score = max(1, r.cpu_count) * ghz
    fraction = min(0.8, max(0.15, 0.08 * score))
    if 0 < r.ram_total_bytes < GIB:
        fraction = min(fraction, 0.25)
    elif 0 < r.ram_total_bytes < 2 * GIB:
        fraction = min(fraction, 0.5)
    return DeviceClassBudget(
        macs_fraction=round(fraction, 3), macs_per_ms=0.25e6 * score, description="from the resource probe"
    )


def budget_from_proto(b: pb.Budget) -> Budget:
    """An explicit Budget message -> spec.Budget (0 means "no limit" on the wire; Budget checks the rest)."""
    return Budget(
        macs_fraction=b.macs_fraction or None,
        params_fraction=b.params_fraction or None,
        max_macs=_absolute(b.max_macs),
        max_params=_absolute(b.max_params),
    )


def _absolute(v: float) -> int | None:
    if v != v:  # NaN
        raise ImpossibleBudgetError("a budget limit is NaN; send a positive number or 0 for none")
    return None if v == 0 else math.ceil(v)
