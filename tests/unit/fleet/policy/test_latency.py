"""Latency budgets: the cost model, its seed (onnxruntime here), telemetry updates, drift, hostile devices."""

from __future__ import annotations

import math

import pytest

from edgecut.server.errors import ImpossibleBudgetError
from edgecut.server.fleet.policy.budget import BudgetPolicy
from edgecut.server.fleet.policy.latency import (
    MAX_RATIO,
    CostModel,
    LatencyModels,
    fit,
    measure_here,
)
from edgecut.v1 import fleet_pb2 as pb

THROUGHPUT = {"x86": 10e6, "rpi4": 1.5e6}


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_conversion_from_milliseconds_to_macs() -> None:
    m = CostModel(ms_per_mmac=0.5, fixed_ms=2.0)  # 2 ms + 0.5 ms per million MACs
    assert m.max_macs(12.0) == 20_000_000
    assert m.latency_ms(20_000_000) == pytest.approx(12.0)
    with pytest.raises(ImpossibleBudgetError, match="fixed cost"):
        m.max_macs(1.5)


def test_fit_recovers_a_line_and_stays_physical() -> None:
    got = fit([(1e6, 1.5), (10e6, 6.0), (20e6, 11.0)])
    assert got.ms_per_mmac == pytest.approx(0.5) and got.fixed_ms == pytest.approx(1.0)
    assert fit([(1e6, 3.0), (2e6, 1.0)]).fixed_ms == 0.0  # falling times: noise, no negative slope
    with pytest.raises(ValueError):
        fit([(1e6, 1.0), (1e6, 2.0)])


def test_measured_seed_scales_to_each_class_by_the_table() -> None:
    models = LatencyModels(THROUGHPUT)
    assert models.model("rpi4", 1.5e6).max_macs(10.0) == 15_000_000  # the table alone: 10 ms x 1.5 M/ms
    models.seed(CostModel(0.1, 1.0))  # this machine (the x86 reference)
    assert models.model("x86", 10e6) == CostModel(0.1, 1.0)
    rpi4 = models.model("rpi4", 1.5e6)
    assert rpi4.ms_per_mmac == pytest.approx(0.1 * 10 / 1.5) and rpi4.fixed_ms == pytest.approx(10 / 1.5)


def test_onnxruntime_measurement_here_gives_a_usable_model() -> None:
    model, points = measure_here(runs=5)
    assert len(points) == 3 and model.ms_per_mmac > 0 and model.fixed_ms >= 0
    biggest = max(points)
    assert model.latency_ms(biggest[0]) == pytest.approx(biggest[1], rel=0.5)


def test_telemetry_moves_the_class_model_in_bounded_steps() -> None:
    models = LatencyModels(THROUGHPUT)
    before = models.model("x86", 10e6).latency_ms(10e6)  # 1 ms
    for i in range(50):  # every device of the class runs twice as slow as the table says
        models.observe(f"d{i % 5}", "x86", 10e6, 10_000_000, 2.0, 100, "a")
    assert models.model("x86", 10e6).latency_ms(10e6) == pytest.approx(2 * before, rel=0.02)
    one = LatencyModels(THROUGHPUT)
    one.observe("d0", "x86", 10e6, 10_000_000, 2.0, 100, "a")
    assert one.scale("x86") == pytest.approx(1.1)  # one report moves it 10 % at most
    assert one.scale("rpi4") == 1.0  # other classes are untouched


@pytest.mark.parametrize("p50", [1e9, 1e-9, math.nan, math.inf, -5.0, 0.0])
def test_a_hostile_device_cannot_move_the_fleet_model(p50: float) -> None:
    models = LatencyModels(THROUGHPUT)
    for _ in range(3):
        for i in range(5):  # five honest devices at the table's speed
            models.observe(f"honest{i}", "x86", 10e6, 10_000_000, 1.0, 100, "a")
    honest = models.max_macs("x86", 10e6, 10.0)
    for _ in range(1000):  # one device lies a thousand times
        models.observe("mallory", "x86", 10e6, 10_000_000, p50, 100, "a")
    assert models.max_macs("x86", 10e6, 10.0) == pytest.approx(honest, rel=0.01)
    alone = LatencyModels(THROUGHPUT)
    for _ in range(1000):  # even alone in its class, its pull is clipped
        alone.observe("mallory", "x86", 10e6, 10_000_000, p50, 100, "a")
    assert 1 / MAX_RATIO <= alone.scale("x86") <= MAX_RATIO


def test_too_few_requests_teach_nothing() -> None:
    models = LatencyModels(THROUGHPUT)
    models.observe("d0", "x86", 10e6, 10_000_000, 50.0, 3, "a")
    assert models.scale("x86") == 1.0


def test_sustained_drift_past_the_budget_triggers_one_retailoring() -> None:
    clock = Clock()
    models = LatencyModels(THROUGHPUT, sustain_s=60, tolerance=0.1, clock=clock)

    def report(p50: float, artifact: str = "a") -> float | None:
        return models.observe("pi", "x86", 10e6, 10_000_000, p50, 100, artifact, max_latency_ms=1.2)

    assert report(1.0) is None  # within budget
    clock.t = 10
    assert report(3.0) is None  # over budget: the clock starts
    clock.t = 40
    assert report(1.1) is None  # back within budget + 10 %: reset
    clock.t = 50
    assert report(3.0) is None
    clock.t = 100
    assert report(3.0) is None  # 50 s over budget: not yet
    clock.t = 111
    slowdown = report(3.0)
    assert slowdown is not None and slowdown > 1.5  # 3 ms against a class prediction of ~1.2-1.6 ms
    clock.t = 500
    assert report(3.0) is None  # once per served model
    clock.t = 600
    assert report(3.0, artifact="smaller") is None  # a new model starts its own record
    # the slowdown makes the device's own budget tighter; other devices keep theirs
    assert models.max_macs("x86", 10e6, 10.0, slowdown) < models.max_macs("x86", 10e6, 10.0) / 1.5


def test_the_policy_turns_max_latency_into_max_macs_with_the_cost_model() -> None:
    policy = BudgetPolicy()
    rpi4 = pb.Resources(device_class="rpi4")
    assert policy.decide(rpi4, 10.0).budget.max_macs == 15_000_000  # the table, before any measurement
    policy.latency.seed(CostModel(0.1, 1.0))  # x86 reference: rpi4 = 0.667 ms/MMAC + 6.67 ms
    assert policy.decide(rpi4, 10.0).budget.max_macs == pytest.approx(5_000_000, rel=0.01)
    with pytest.raises(ImpossibleBudgetError, match="fixed cost"):
        policy.decide(rpi4, 10.0, slowdown=2.0)  # 5 ms left is below rpi4's 6.7 ms fixed cost


def test_each_precision_learns_its_own_scale_and_the_budget_counts_what_the_class_serves() -> None:
    """Devices of a class time int8 at 0.4 x what the fp32 line predicts: the int8 scale learns it (at
    most MAX_STEP per report), fp32's stays, and the budget follows the precision most devices serve."""
    models = LatencyModels(THROUGHPUT)
    models.seed(CostModel(0.1, 1.0))
    macs = 20_000_000  # x86 line: 3 ms in fp32
    fp32_budget = models.max_macs("x86", 10e6, 10.0)
    for _ in range(40):
        for d in ("a", "b", "c"):
            models.learn(d, "x86", 10e6, macs, 3.0, 35, "fp32")
            models.learn(d, "x86", 10e6, macs, 1.2, 35, "int8")
    assert models.scale("x86", "fp32") == pytest.approx(1.0)
    assert models.scale("x86", "int8") == pytest.approx(0.4, rel=0.02)
    assert models.observed("x86") == {"fp32": 3, "int8": 3} and models.observed("rpi4") == {}
    assert models.precision_of("x86") == "fp32"  # timed, but nobody reports serving int8 yet
    assert models.max_macs("x86", 10e6, 10.0) == fp32_budget
    for d in ("a", "b"):  # two of three devices serve int8 (telemetry)
        models.observe(d, "x86", 10e6, macs, 1.2, 100, "art", precision="int8")
    models.observe("c", "x86", 10e6, macs, 3.0, 100, "art", precision="fp32")
    assert models.precision_of("x86") == "int8"
    int8_budget = models.max_macs("x86", 10e6, 10.0)
    assert int8_budget == models.max_macs("x86", 10e6, 10.0, precision="int8") > 2 * fp32_budget
    assert models.max_macs("x86", 10e6, 10.0, precision="fp32") == fp32_budget
    assert models.precision_of("rpi4") == "fp32" and models.scale("rpi4", "int8") == 1.0  # other classes


def test_a_precision_without_observations_uses_the_class_fp32_scale_and_bad_timings_are_ignored() -> None:
    models = LatencyModels(THROUGHPUT)
    models.seed(CostModel(0.1, 1.0))
    for _ in range(40):
        models.learn("a", "x86", 10e6, 20_000_000, 6.0, 35, "fp32")  # the class runs 2x the line
    assert models.scale("x86", "int8") == models.scale("x86", "fp32") == pytest.approx(2.0, rel=0.02)
    before = models.scale("x86", "int8")
    for ms, runs in ((float("nan"), 35), (-1.0, 35), (0.0, 35), (1.0, 3)):  # broken, or too few runs
        models.learn("a", "x86", 10e6, 20_000_000, ms, runs, "int8")
    assert models.scale("x86", "int8") == before
    models.learn("evil", "x86", 10e6, 20_000_000, 1e-9, 35, "int8")  # one hostile report: one clipped step
    assert models.scale("x86", "int8") == pytest.approx(before / 1.1)
