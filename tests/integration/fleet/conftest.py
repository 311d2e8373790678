"""Fixtures for the fleet server's integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from edgecut.broker import EmbeddedBroker
from tests.support.fleet_server import Device


@pytest.fixture
def devices(broker: EmbeddedBroker) -> Iterator[Callable[[str], Device]]:
    """Make device-side MQTT clients (closed after the test)."""
    made: list[Device] = []

    def make(device_id: str) -> Device:
        made.append(Device(broker.url, device_id))
        return made[-1]

    yield make
    for d in made:
        d.close()
