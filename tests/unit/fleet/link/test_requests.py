"""requests.py: every number and list a device sends is range-checked before it reaches the policy, the
engine or the database. Each bound is accepted exactly at the bound and refused just past it, with an
INVALID_FIELD error whose message starts with the field's name."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from edgecut.server.errors import ImpossibleBudgetError, InvalidFieldError
from edgecut.server.fleet.link.requests import (
    MAX_STATE_REASON,
    MAX_TASK_NAME,
    MAX_TASKS,
    check_telemetry,
    needs_decision,
    request_spec,
    timings_of,
)
from edgecut.server.fleet.policy.budget import BudgetPolicy
from edgecut.server.fleet.policy.limits import INT64_MAX, MAX_LATENCY_MS, MAX_MODEL_BYTES
from edgecut.server.spec import Budget, BuildSpec
from edgecut.v1 import fleet_pb2 as pb

POLICY = BudgetPolicy()
MAX_CPU_PERCENT = 409_600.0  # 4096 cores at 100 %
BAD_FLOATS = (math.nan, math.inf, -math.inf)


def needs(**fields: Any) -> pb.TaskNeeds:
    resources = fields.pop("resources", {})
    return pb.TaskNeeds(
        device_id="cam-1",
        tasks=fields.pop("tasks", ["seg"]),
        resources=pb.Resources(cpu_count=4, device_class="rpi4", **resources),
        **fields,
    )


def request(**fields: Any) -> pb.ModelRequest:
    resources = fields.pop("resources", {})
    budget = fields.pop("budget", None)
    msg = pb.ModelRequest(
        device_id="cam-1",
        tasks=fields.pop("tasks", ["seg"]),
        resources=pb.Resources(cpu_count=4, device_class="rpi4", **resources),
        **fields,
    )
    if budget is not None:
        msg.budget.CopyFrom(pb.Budget(**budget))
    return msg


def telemetry(**fields: Any) -> pb.Telemetry:
    return pb.Telemetry(device_id="cam-1", **fields)


def decide(msg: pb.TaskNeeds) -> BuildSpec:
    return needs_decision(POLICY, msg)[1]


def refused(field: str, check: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    """`check(*args, **kwargs)` raises INVALID_FIELD, its message starting with `field`."""
    with pytest.raises(InvalidFieldError) as err:
        check(*args, **kwargs)
    assert err.value.code == "INVALID_FIELD"
    assert str(err.value).startswith(field), str(err.value)


# (field, message builder, check, highest accepted value) for every integer a device sends
INTEGERS: list[tuple[str, Callable[[Any], Any], Callable[[Any], object], int]] = [
    ("seq", lambda v: needs(seq=v), decide, INT64_MAX),
    ("max_model_bytes", lambda v: needs(max_model_bytes=v), decide, MAX_MODEL_BYTES),
    *[
        (f"resources.{name}", lambda v, n=name: needs(resources={n: v}), decide, INT64_MAX)
        for name in ("ram_total_bytes", "ram_available_bytes", "disk_free_bytes")
    ],
    *[
        (
            f"resources.{name}",
            lambda v, n=name: request(resources={n: v}),
            lambda m: request_spec(POLICY, m),
            INT64_MAX,
        )
        for name in ("ram_total_bytes", "ram_available_bytes", "disk_free_bytes")
    ],
    *[
        (name, lambda v, n=name: telemetry(**{n: v}), check_telemetry, INT64_MAX)
        for name in ("inference_count", "failed_count", "rss_bytes")
    ],
]


@pytest.mark.parametrize(
    ("field", "build", "check", "hi"), INTEGERS, ids=[f"{i[0]}-{i[2].__name__}" for i in INTEGERS]
)
def test_each_integer_is_accepted_at_its_bound_and_refused_past_it(
    field: str, build: Callable[[int], Any], check: Callable[[Any], object], hi: int
) -> None:
    check(build(0))
    check(build(hi))
    refused(field, check, build(hi + 1))


def test_the_send_time_is_refused_below_zero() -> None:
    """An int64 on the wire: protobuf itself refuses more than INT64_MAX, requests.py a negative time."""
    check_telemetry(telemetry(sent_unix_ms=INT64_MAX))
    refused("sent_unix_ms", check_telemetry, telemetry(sent_unix_ms=-1))


# (field, message builder, check, lowest and highest accepted value) for every float a device sends
FLOATS: list[tuple[str, Callable[[Any], Any], Callable[[Any], object], float, float]] = [
    ("resources.cpu_freq_mhz", lambda v: needs(resources={"cpu_freq_mhz": v}), decide, 0.0, 1e6),
    (
        "resources.cpu_freq_mhz",
        lambda v: request(resources={"cpu_freq_mhz": v}),
        lambda m: request_spec(POLICY, m),
        0.0,
        1e6,
    ),
    ("max_latency_ms", lambda v: needs(max_latency_ms=v), decide, 0.0, MAX_LATENCY_MS),
    *[
        (name, lambda v, n=name: telemetry(**{n: v}), check_telemetry, 0.0, MAX_LATENCY_MS)
        for name in ("latency_p50_ms", "latency_p95_ms")
    ],
    ("cpu_percent", lambda v: telemetry(cpu_percent=v), check_telemetry, 0.0, MAX_CPU_PERCENT),
]


@pytest.mark.parametrize(
    ("field", "build", "check", "lo", "hi"), FLOATS, ids=[f"{f[0]}-{f[2].__name__}" for f in FLOATS]
)
def test_each_float_is_accepted_in_its_range_and_refused_outside_it_nan_and_inf_included(
    field: str, build: Callable[[float], Any], check: Callable[[Any], object], lo: float, hi: float
) -> None:
    check(build(lo))
    check(build(hi))
    for bad in (lo - 1e-3, math.nextafter(hi, math.inf), *BAD_FLOATS):
        refused(field, check, build(bad))


@pytest.mark.parametrize("name", ["max_macs", "max_params"])
def test_an_explicit_absolute_budget_is_checked_up_to_1e18(name: str) -> None:
    spec = request_spec(POLICY, request(budget={name: 1e18}))
    assert getattr(spec.budget, name) == 10**18
    for bad in (math.nextafter(1e18, math.inf), -1.0, *BAD_FLOATS):
        refused(f"budget.{name}", request_spec, POLICY, request(budget={name: bad}))


@pytest.mark.parametrize("name", ["macs_fraction", "params_fraction"])
def test_an_explicit_budget_fraction_past_1e6_is_an_invalid_field_and_past_1_an_impossible_budget(
    name: str,
) -> None:
    assert getattr(request_spec(POLICY, request(budget={name: 0.5})).budget, name) == 0.5
    with pytest.raises(ImpossibleBudgetError):  # in range for the wire, but no model keeps 1e6 x its MACs
        request_spec(POLICY, request(budget={name: 1e6}))
    for bad in (math.nextafter(1e6, math.inf), -0.5, *BAD_FLOATS):
        refused(f"budget.{name}", request_spec, POLICY, request(budget={name: bad}))


def test_an_empty_budget_means_the_policy_decides() -> None:
    spec = request_spec(POLICY, request(budget={}))
    assert spec.budget == POLICY.decide(pb.Resources(cpu_count=4, device_class="rpi4")).budget


CHECKS: list[tuple[str, Callable[..., Any]]] = [
    ("needs", lambda **f: decide(needs(**f))),
    ("request", lambda **f: request_spec(POLICY, request(**f))),
]


@pytest.mark.parametrize(("kind", "check"), CHECKS, ids=[c[0] for c in CHECKS])
def test_at_most_32_tasks_of_at_most_64_characters(kind: str, check: Callable[..., BuildSpec]) -> None:
    names = [f"t{i:02d}" for i in range(MAX_TASKS)]
    assert check(tasks=names).tasks == tuple(sorted(names))
    refused("tasks has 33 entries", check, tasks=[*names, "one-more"])
    long = "x" * MAX_TASK_NAME
    assert check(tasks=[long]).tasks == (long,)
    refused("tasks entry", check, tasks=[long + "x"])


@pytest.mark.parametrize(("kind", "check"), CHECKS, ids=[c[0] for c in CHECKS])
def test_priorities_are_bounded_and_bucketed_to_powers_of_two(
    kind: str, check: Callable[..., BuildSpec]
) -> None:
    tasks = ["a", "b", "c", "d", "e"]
    spec = check(tasks=tasks, priorities={"a": 1e-9, "b": 0.3, "c": 1.3, "d": 3.0, "e": 1e6})
    assert dict(spec.priorities) == {"a": 0.25, "b": 0.25, "d": 4.0, "e": 4.0}  # c rounds to 1: the default
    for bad in (0.0, -1.0, math.nextafter(1e6, math.inf), *BAD_FLOATS):
        refused("priorities['a']", check, tasks=tasks, priorities={"a": bad})
    many = {f"t{i:02d}": 2.0 for i in range(MAX_TASKS)}
    assert len(check(tasks=list(many), priorities=many).priorities) == MAX_TASKS
    refused("priorities has 33 entries", check, tasks=list(many), priorities={**many, "x": 2.0})


def test_a_long_task_name_in_priorities_is_cut_in_the_message() -> None:
    name = "p" * 1000
    with pytest.raises(InvalidFieldError) as err:
        decide(needs(tasks=["seg"], priorities={name: math.nan}))
    assert len(str(err.value)) < 200


def test_an_artifact_id_of_at_most_64_characters() -> None:
    check_telemetry(telemetry(artifact_id="f" * 64))
    refused("artifact_id", check_telemetry, telemetry(artifact_id="f" * 65))


def test_a_valid_needs_message_becomes_the_policy_budget_and_a_sorted_spec() -> None:
    decision, spec = needs_decision(POLICY, needs(tasks=["depth", "seg", "depth"], seq=7, max_latency_ms=0.0))
    assert spec == BuildSpec.create(["depth", "seg"], decision.budget)
    assert isinstance(decision.budget, Budget)


def test_the_agents_life_cycle_fields_are_bounded() -> None:
    """The state an agent reports (agent/lifecycle.py): a known enum number, a time, a bounded reason."""
    check_telemetry(
        telemetry(state=pb.AgentState.Value("AGENT_STATE_SERVING"), state_since_unix_ms=INT64_MAX)
    )
    check_telemetry(telemetry(state=0))  # an agent older than the field
    refused("state", check_telemetry, telemetry(state=max(pb.AgentState.values()) + 1))
    refused("state_since_unix_ms", check_telemetry, telemetry(state_since_unix_ms=-1))
    check_telemetry(telemetry(state_reason="r" * MAX_STATE_REASON))
    refused("state_reason", check_telemetry, telemetry(state_reason="r" * (MAX_STATE_REASON + 1)))


def test_the_precision_and_its_timings_are_bounded() -> None:
    """What a device reports about its precisions (issue 30): a known precision, finite times."""
    ok = pb.PrecisionTiming(precision="int8", artifact_id="a" * 64, median_ms=0.6, runs=35)
    check_telemetry(telemetry(precision="int8", timings=[ok, pb.PrecisionTiming(precision="fp32")]))
    check_telemetry(telemetry(precision=""))  # an agent older than the field: fp32
    refused("precision", check_telemetry, telemetry(precision="int4"))
    for bad in (
        pb.PrecisionTiming(precision="int4", median_ms=1.0),
        pb.PrecisionTiming(precision="int8", median_ms=math.nan),
        pb.PrecisionTiming(precision="int8", median_ms=-1.0),
    ):
        refused("timings", check_telemetry, telemetry(timings=[ok, bad]))
        assert timings_of([ok, bad]) == [timings_of([ok])[0]]  # a swap report keeps the good entries
    refused("timings", check_telemetry, telemetry(timings=[ok] * 9))
    assert timings_of([ok] * 9) == timings_of([ok] * 8)
