"""The warning when the embedded iotcore broker carries more devices than it serves well."""

from __future__ import annotations

import logging

import pytest

from edgecut.server.fleet.events import FleetEvent, Observers
from edgecut.server.fleet.policy.broker_load import IOTCORE_DEVICES, BrokerLoad

WARNING = "the embedded iotcore broker now carries more than"


def _hear(observers: Observers, n: int, kind: str = "needs", start: int = 0) -> None:
    for i in range(start, start + n):
        observers.emit(FleetEvent(kind, f"dev-{i}", {"status": "online"}))


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]


def test_iotcore_past_its_limit_is_warned_about_once_with_the_figure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    observers = Observers()
    observers.add(BrokerLoad("iotcore"))
    _hear(observers, IOTCORE_DEVICES)
    _hear(observers, IOTCORE_DEVICES, kind="telemetry")  # the same devices again: not more of them
    assert _warnings(caplog) == []
    _hear(observers, 1, kind="state", start=IOTCORE_DEVICES)
    _hear(observers, 2 * IOTCORE_DEVICES, start=IOTCORE_DEVICES + 1)
    warned = _warnings(caplog)
    assert len(warned) == 1 and f"more than {IOTCORE_DEVICES} devices" in warned[0]
    assert "mosquitto" in warned[0] and "docs/operations.md" in warned[0]


def test_devices_that_went_offline_do_not_count(caplog: pytest.LogCaptureFixture) -> None:
    observers = Observers()
    observers.add(BrokerLoad("iotcore", limit=3))
    _hear(observers, 3)
    observers.emit(FleetEvent("state", "dev-0", {"status": "offline"}))
    _hear(observers, 1, start=3)
    assert _warnings(caplog) == []
    _hear(observers, 1, start=4)
    assert len(_warnings(caplog)) == 1


@pytest.mark.parametrize("kind", ["mosquitto", ""])
def test_other_brokers_are_not_judged(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    observers = Observers()
    observers.add(BrokerLoad(kind, limit=3))
    _hear(observers, 10)
    assert _warnings(caplog) == []
