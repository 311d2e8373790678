from __future__ import annotations

import pytest

from edgecut.server.errors import ImpossibleBudgetError
from edgecut.server.fleet.policy.budget import BudgetPolicy, DeviceClassBudget, budget_from_proto
from edgecut.server.spec import Budget
from edgecut.v1 import fleet_pb2 as pb

GIB = 1 << 30


def test_known_classes_use_the_table() -> None:
    p = BudgetPolicy()
    assert p.decide(pb.Resources(device_class="rpi4")).budget == Budget(macs_fraction=0.3)
    assert p.decide(pb.Resources(device_class="Jetson-Nano")).budget == Budget(macs_fraction=0.5)
    d = p.decide(pb.Resources(device_class="x86"))
    assert d.device_class == "x86" and d.budget.macs_fraction == 0.8


def test_unknown_class_falls_back_to_the_probe() -> None:
    p = BudgetPolicy()
    weak = p.decide(pb.Resources(cpu_count=4, cpu_freq_mhz=1200, arch="armv7l", ram_total_bytes=GIB // 2))
    strong = p.decide(
        pb.Resources(
            device_class="mystery", cpu_count=16, cpu_freq_mhz=3500, arch="x86_64", ram_total_bytes=32 * GIB
        )
    )
    tiny = p.decide(pb.Resources(cpu_count=1, arch="aarch64"))
    assert weak.device_class == strong.device_class == "fallback"
    assert weak.budget.macs_fraction == 0.25  # RAM below 1 GiB caps it
    assert strong.budget.macs_fraction == 0.8
    assert tiny.budget.macs_fraction == 0.15


def test_latency_and_size_targets_tighten_the_budget() -> None:
    d = BudgetPolicy().decide(pb.Resources(device_class="rpi4"), max_latency_ms=20, max_model_bytes=400_000)
    assert d.budget.max_macs == 20 * 1_500_000
    assert d.budget.max_params == 100_000
    assert d.budget.macs_fraction == 0.3


def test_table_is_configurable() -> None:
    p = BudgetPolicy(
        {
            "rpi4": DeviceClassBudget(macs_fraction=0.45, macs_per_ms=1e6),
            "npu-box": DeviceClassBudget(macs_fraction=1.0, params_fraction=0.9, macs_per_ms=5e7),
        }
    )
    assert p.decide(pb.Resources(device_class="rpi4")).budget == Budget(macs_fraction=0.45)
    assert p.decide(pb.Resources(device_class="npu-box")).budget == Budget(
        macs_fraction=1.0, params_fraction=0.9
    )
    assert p.decide(pb.Resources(device_class="x86")).budget == Budget(macs_fraction=0.8)  # defaults kept


@pytest.mark.parametrize(("latency", "nbytes"), [(-1.0, 0), (float("nan"), 0), (1e-9, 0), (0.0, 3)])
def test_impossible_targets_are_refused(latency: float, nbytes: int) -> None:
    with pytest.raises(ImpossibleBudgetError):
        BudgetPolicy().decide(pb.Resources(device_class="rpi4"), latency, nbytes)


def test_explicit_budget_message() -> None:
    assert budget_from_proto(pb.Budget(macs_fraction=0.4, max_params=1e5)) == Budget(
        macs_fraction=0.4, max_params=100_000
    )
    assert budget_from_proto(pb.Budget()).empty
    for bad in (
        pb.Budget(macs_fraction=1.5),
        pb.Budget(max_macs=-10),
        pb.Budget(params_fraction=float("nan")),
    ):
        with pytest.raises(ImpossibleBudgetError):
            budget_from_proto(bad)
