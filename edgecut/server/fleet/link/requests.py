"""Wire requests (TaskNeeds over MQTT, ModelRequest over gRPC) -> a checked `BuildSpec`; Telemetry checked.

Everything a device sends is range-checked here, so a bad number becomes INVALID_FIELD naming the
field instead of an overflow deep in the policy, the engine or the database. Priorities are put into
coarse buckets (powers of two from 1/4 to 4) before they reach the build key: near-identical weights
share one build, so a device cannot force a new build per message by nudging a weight.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from edgecut.server.errors import InvalidFieldError
from edgecut.server.fleet.policy.budget import BudgetPolicy, Decision, budget_from_proto
from edgecut.server.fleet.policy.limits import INT64_MAX, MAX_LATENCY_MS, MAX_MODEL_BYTES, bounded_int, finite

__all__ = [
    "INT64_MAX",
    "MAX_TASKS",
    "MAX_TASK_NAME",
    "check_telemetry",
    "needs_decision",
    "request_spec",
    "timings_of",
]
from edgecut.server.spec import Budget, BuildSpec
from edgecut.v1 import fleet_pb2 as pb

MAX_TASKS = 32
MAX_TASK_NAME = 64
PRIORITY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 4.0)
MAX_PRIORITY = 1e6
MAX_CPU_PERCENT = 100.0 * 4096  # psutil counts each busy core as 100 %
MAX_ARTIFACT_ID = 64  # a sha256 in hex
MAX_STATE_REASON = 300  # the agent keeps at most 300 (edgecut/agent/lifecycle.py)
PRECISIONS = ("", "fp32", "int8", "fp16")  # "" = an agent older than the field (fp32)
MAX_TIMINGS = 8  # one per precision offered, with room


def priority_bucket(task: str, weight: float) -> float:
    """The nearest power of two in [1/4, 4] on a log scale; 0, negative, NaN and inf are refused."""
    finite(f"priorities[{task[:MAX_TASK_NAME]!r}]", weight, 1e-9, MAX_PRIORITY)
    exponent = min(2, max(-2, round(math.log2(weight))))
    return float(2.0**exponent)


def tasks_of(tasks: list[str]) -> list[str]:
    if len(tasks) > MAX_TASKS:
        raise InvalidFieldError(f"tasks has {len(tasks)} entries: at most {MAX_TASKS}")
    for t in tasks:
        if len(t) > MAX_TASK_NAME:
            raise InvalidFieldError(
                f"tasks entry {t[:24]!r}... is {len(t)} characters: at most {MAX_TASK_NAME}"
            )
    return list(tasks)


def spec_of(tasks: list[str], budget: Budget, priorities: dict[str, float]) -> BuildSpec:
    if len(priorities) > MAX_TASKS:
        raise InvalidFieldError(f"priorities has {len(priorities)} entries: at most {MAX_TASKS}")
    buckets = {t: priority_bucket(t, w) for t, w in priorities.items()}
    return BuildSpec.create(tasks_of(tasks), budget, buckets)


def check_resources(r: pb.Resources) -> None:
    finite("resources.cpu_freq_mhz", r.cpu_freq_mhz, 0.0, 1e6)
    for name in ("ram_total_bytes", "ram_available_bytes", "disk_free_bytes"):
        bounded_int(f"resources.{name}", getattr(r, name))


def needs_decision(
    policy: BudgetPolicy, needs: pb.TaskNeeds, slowdown: float = 1.0
) -> tuple[Decision, BuildSpec]:
    """Check a TaskNeeds and turn it into the policy's decision and the spec to build
    (`slowdown`: the device's measured latency drift, policy/latency.py)."""
    bounded_int("seq", needs.seq)
    check_resources(needs.resources)
    finite("max_latency_ms", needs.max_latency_ms, 0.0, MAX_LATENCY_MS)
    bounded_int("max_model_bytes", needs.max_model_bytes, MAX_MODEL_BYTES)
    decision = policy.decide(needs.resources, needs.max_latency_ms, needs.max_model_bytes, slowdown)
    return decision, spec_of(list(needs.tasks), decision.budget, dict(needs.priorities))


def request_spec(policy: BudgetPolicy, request: pb.ModelRequest) -> BuildSpec:
    """A ModelRequest's spec: its explicit budget when non-empty, else the policy's for its resources."""
    check_resources(request.resources)
    if request.HasField("budget") and request.budget.ByteSize() > 0:
        b = request.budget
        for name in ("max_macs", "max_params"):
            finite(f"budget.{name}", getattr(b, name), 0.0, 1e18)
        for name in ("macs_fraction", "params_fraction"):
            finite(
                f"budget.{name}", getattr(b, name), 0.0, 1e6
            )  # above 1 is IMPOSSIBLE_BUDGET, said by Budget
        budget = budget_from_proto(b)
    else:
        budget = policy.decide(request.resources).budget
    return spec_of(list(request.tasks), budget, dict(request.priorities))


def check_telemetry(t: pb.Telemetry) -> None:
    """Refuse a Telemetry with any figure out of range (INVALID_FIELD naming it), so nothing stored from
    it can overflow a column (a uint64 counter at 2^64 - 1), poison an average (p50 = 1e300) or compare
    false against every rollout threshold (NaN)."""
    for name in ("inference_count", "failed_count", "rss_bytes", "sent_unix_ms", "state_since_unix_ms"):
        bounded_int(name, getattr(t, name))
    for name in ("latency_p50_ms", "latency_p95_ms"):
        finite(name, getattr(t, name), 0.0, MAX_LATENCY_MS)
    finite("cpu_percent", t.cpu_percent, 0.0, MAX_CPU_PERCENT)
    if len(t.artifact_id) > MAX_ARTIFACT_ID:
        raise InvalidFieldError(f"artifact_id is {len(t.artifact_id)} characters: at most {MAX_ARTIFACT_ID}")
    if t.precision not in PRECISIONS:
        raise InvalidFieldError(f"precision {t.precision[:16]!r} is not one of fp32, int8, fp16")
    if len(t.timings) > MAX_TIMINGS or len(timings_of(t.timings)) != len(t.timings):
        raise InvalidFieldError(
            f"timings: at most {MAX_TIMINGS} entries, each a known precision and a finite, non-negative time"
        )
    if t.state not in pb.AgentState.values():  # proto3 keeps an unknown enum number as it came
        raise InvalidFieldError(f"state {t.state} is not an agent life-cycle state (fleet.proto AgentState)")
    if len(t.state_reason) > MAX_STATE_REASON:
        raise InvalidFieldError(
            f"state_reason is {len(t.state_reason)} characters: at most {MAX_STATE_REASON}"
        )


def timings_of(timings: Iterable[pb.PrecisionTiming]) -> list[dict[str, Any]]:
    """A device's per-precision timings as registry rows; an entry with an unknown precision or a time
    that is not finite and non-negative is dropped (a swap report is recorded even so)."""
    out: list[dict[str, Any]] = []
    for t in list(timings)[:MAX_TIMINGS]:
        if t.precision not in PRECISIONS[1:] or not (
            math.isfinite(t.median_ms) and 0 <= t.median_ms <= MAX_LATENCY_MS
        ):
            continue
        out.append(
            {
                "precision": t.precision,
                "artifact_id": t.artifact_id[:MAX_ARTIFACT_ID],
                "median_ms": t.median_ms,
                "runs": t.runs,
                "note": t.note[:MAX_STATE_REASON],
            }
        )
    return out
