"""The device page shows the agent's life-cycle state from its latest telemetry (no extra column)."""

from __future__ import annotations

import time
from pathlib import Path

from edgecut.server.fleet.link.wire import to_dict
from edgecut.server.fleet.state.history import FleetHistory
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.store import LocalStore
from edgecut.server.web.events import EventHub
from edgecut.server.web.views import Views
from edgecut.v1 import fleet_pb2 as pb


def test_the_device_view_says_the_agents_state_since_when_and_why(tmp_path: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path / 'r.sqlite3'}")
    try:
        views = Views(registry, LocalStore(tmp_path / "store"), FleetHistory(registry), EventHub())
        registry.devices.record_state("pi", "online", "", [], "0.1.0")
        assert views.device("pi")["agent_state"] == ""  # no telemetry yet, or an agent older than the field
        since = int(time.time() * 1000) - 5000
        sample = pb.Telemetry(
            state=pb.AGENT_STATE_ROLLED_BACK, state_since_unix_ms=since, state_reason="abc refused: NaN"
        )
        registry.devices.record_telemetry("pi", to_dict(sample))  # as the MQTT bridge stores it
        d = views.device("pi")
        assert d["agent_state"] == "rolled_back" and d["agent_state_reason"] == "abc refused: NaN"
        assert d["agent_state_since"] == since / 1000
    finally:
        registry.close()
