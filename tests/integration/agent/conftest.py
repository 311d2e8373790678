"""Fixtures for the agent's integration tests: the real fleet server on a real broker, running agents."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edgecut import topics
from edgecut.agent.agent import Agent
from edgecut.agent.settings import AgentSettings
from edgecut.broker import EmbeddedBroker
from edgecut.server.fleet.app import FleetServer
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.store import LocalStore
from edgecut.v1 import fleet_pb2
from tests.support.fleet_server import Device, start_server
from tests.support.keys import fleet_key, operator_key
from tests.support.onnx_engine import OnnxTestEngine
from tests.support.onnx_models import meta_of
from tests.support.waiting import WAIT_S


@dataclass
class Fleet:
    """A whole FleetServer (registry + store + jobs + gRPC + MQTT bridge) with the ONNX test engine."""

    server: FleetServer
    engine: OnnxTestEngine
    broker_url: str

    @property
    def address(self) -> str:
        return self.server.grpc_address

    @property
    def store(self) -> LocalStore:
        assert isinstance(self.server.store, LocalStore)
        return self.server.store

    @property
    def registry(self) -> Registry:
        assert self.server.registry is not None
        return self.server.registry

    def put(self, data: bytes) -> str:
        """Store ready-made ONNX bytes in the server's store (as a finished build would)."""
        with tempfile.NamedTemporaryFile(suffix=".onnx") as f:
            f.write(data)
            f.flush()
            return self.store.put_file(Path(f.name), meta_of(data)).artifact_id

    def file(self, artifact_id: str) -> Path:
        """The artifact's file in the server's store (tests corrupt it in place)."""
        return self.store.root / artifact_id[:2] / f"{artifact_id}.onnx"

    def swaps(self, device_id: str) -> list[dict[str, Any]]:
        """The swap reports the server recorded for the device, oldest first."""
        return self.registry.offers.swaps(device_id)[::-1]

    def device(self, device_id: str) -> dict[str, Any]:
        return self.registry.devices.get(device_id) or {}

    def prebuild(self, agent: Agent, tasks: list[str]) -> fleet_pb2.ModelReady:
        """Have the server build and store the model it would offer `agent` for `tasks`.

        The agent's own needs (same resources, so the same budget and build key) with `tasks`, sent
        from another device id, so the agent itself hears nothing.
        """
        twin = Device(self.broker_url, f"{agent.device_id}-twin")
        try:
            needs = agent.needs()
            needs.device_id = twin.device_id
            needs.tasks[:] = tasks
            twin.publish(topics.NEEDS, needs.SerializeToString())
            while True:  # skip the retained answer to an earlier prebuild for other tasks
                ready = twin.model_ready(timeout=WAIT_S)
                if sorted(ready.tasks) == sorted(tasks):
                    return ready
        finally:
            twin.close()


@pytest.fixture
def fleet(tmp_path: Path, broker: EmbeddedBroker) -> Iterator[Fleet]:
    engine = OnnxTestEngine(tmp_path / "engine")
    # 8 KB chunks, so test_fetch's ~10 KB model takes several (a resume lands mid-artifact)
    server = start_server(tmp_path / "fleet", engine, broker.url, chunk_size=8192)
    try:
        yield Fleet(server, engine, broker.url)
    finally:
        server.stop()


@pytest.fixture
def make_agent(tmp_path: Path, broker: EmbeddedBroker) -> Iterator[Callable[..., Agent]]:
    agents: list[Agent] = []

    def make(**overrides: Any) -> Agent:
        fields: dict[str, Any] = {
            "device_id": f"dev{len(agents)}",
            "broker_url": broker.url,
            "state_dir": tmp_path / f"agent{len(agents)}",
            "listen": "127.0.0.1:0",
            "ort_threads": 1,
            "reconnect_max_s": 1.0,
            "keepalive_s": 5,
            "telemetry_interval_s": 0.5,
            # declared, so the server's budget (hence its build keys) does not follow the probe
            "device_class": "x86",
            "fleet_keys": [fleet_key().public_text],
            "operator_keys": [operator_key().public_text],
            "download_retry_max_s": 2.0,
        }
        fields.update(overrides)
        agent = Agent(AgentSettings(**fields))
        agent.start()
        agents.append(agent)
        return agent

    yield make
    for a in agents:
        a.stop()


@pytest.fixture
def attacker(broker: EmbeddedBroker) -> Iterator[mqtt.Client]:
    """A client on the broker that is no device of the fleet (no ACL in these tests)."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="mallory")
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    yield c
    c.disconnect()
    c.loop_stop()
