"""Fixtures for the agent's integration tests: the real fleet gRPC server and running agents."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgecut.agent.agent import Agent
from edgecut.agent.settings import AgentSettings
from edgecut.broker import EmbeddedBroker
from edgecut.server.budget_policy import BudgetPolicy
from edgecut.server.grpc_api import FleetServicer, create_server
from edgecut.server.store import LocalStore
from tests.support.onnx_models import meta_of


@dataclass
class Fleet:
    """The real FleetService (DownloadModel from a LocalStore) on 127.0.0.1:0."""

    store: LocalStore
    address: str

    def put(self, data: bytes) -> str:
        with tempfile.NamedTemporaryFile(suffix=".onnx") as f:
            f.write(data)
            f.flush()
            return self.store.put_file(Path(f.name), meta_of(data)).artifact_id

    def put_raw(self, data: bytes, meta_from: bytes) -> str:
        """Store bytes that may not parse as ONNX (the metadata sidecar comes from `meta_from`)."""
        with tempfile.NamedTemporaryFile(suffix=".onnx") as f:
            f.write(data)
            f.flush()
            return self.store.put_file(Path(f.name), meta_of(meta_from)).artifact_id

    def file(self, artifact_id: str) -> Path:
        return self.store.root / artifact_id[:2] / f"{artifact_id}.onnx"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    store = LocalStore(tmp_path / "fleet-store")
    servicer = FleetServicer(store, None, BudgetPolicy(), grpc_address="", chunk_size=8192)
    server, port = create_server("127.0.0.1:0", servicer, max_workers=8)
    servicer.grpc_address = f"127.0.0.1:{port}"
    server.start()
    try:
        yield Fleet(store, servicer.grpc_address)
    finally:
        server.stop(0).wait(5)


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
        }
        fields.update(overrides)
        agent = Agent(AgentSettings(**fields))
        agent.start()
        agents.append(agent)
        return agent

    yield make
    for a in agents:
        a.stop()
