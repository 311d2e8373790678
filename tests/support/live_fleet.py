"""A running fleet for the dashboard's tests: broker URL, a FleetServer with its dashboard, real agents.

The agents are the real `Agent` (MQTT link, gRPC download, onnxruntime, local API) in this process,
each with its own state dir; `Traffic` keeps them answering inference requests so their telemetry
carries latencies. `restart_server()` stops the server and starts a new one on the same state dir
(registry, store) with another engine: how an operator upgrades the base model.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgecut.agent.agent import Agent
from edgecut.agent.errors import AgentError
from edgecut.agent.settings import AgentSettings
from edgecut.server.fleet.app import FleetServer
from edgecut.server.fleet.state.registry import Registry

from .fleet_server import start_server
from .keys import fleet_key, operator_key
from .onnx_engine import SIZE, OnnxTestEngine
from .waiting import WAIT_S, wait_until


@contextlib.contextmanager
def running_fleet(
    root: Path, broker_url: str, engine: Any = None, **server_settings: Any
) -> Iterator[LiveFleet]:
    """A LiveFleet for the length of a test; everything it started is stopped after."""
    fleet = LiveFleet(root, broker_url, engine, **server_settings)
    try:
        yield fleet
    finally:
        fleet.close()


class LiveFleet:
    def __init__(self, root: Path, broker_url: str, engine: Any = None, **server_settings: Any) -> None:
        self.root, self.broker_url = root, broker_url
        # one port for the fleet's life, so an open page reconnects to the restarted server
        self.server_settings = {"http": f"127.0.0.1:{free_port()}", **server_settings}
        # the test engine unless given one (the screenshots use the real, torch one)
        self.engine = engine or OnnxTestEngine(root / "engine-test-mtl-v1")
        self.server: FleetServer = start_server(
            root / "fleet", self.engine, broker_url, **self.server_settings
        )
        self.agents: dict[str, Agent] = {}
        self.traffic = Traffic()

    @property
    def url(self) -> str:
        return self.server.http_url

    @property
    def registry(self) -> Registry:
        assert self.server.registry is not None
        return self.server.registry

    def agent(self, device_id: str, tasks: list[str], device_class: str = "x86", **overrides: Any) -> Agent:
        fields: dict[str, Any] = {
            "device_id": device_id,
            "broker_url": self.broker_url,
            "state_dir": self.root / "agents" / device_id,
            "listen": "127.0.0.1:0",
            "ort_threads": 1,
            "reconnect_max_s": 1.0,
            "keepalive_s": 5,
            "telemetry_interval_s": 0.5,
            "device_class": device_class,
            "tasks": tasks,
            "fleet_keys": [fleet_key().public_text],
            "operator_keys": [operator_key().public_text],
            "download_retry_max_s": 2.0,
            **overrides,
        }
        agent = Agent(AgentSettings(**fields))
        agent.start()
        self.agents[device_id] = agent
        self.traffic.add(agent)
        return agent

    def stop_agent(self, device_id: str) -> Agent:
        """Stop it as `systemctl stop` would: it says OFFLINE on the way out."""
        agent = self.agents.pop(device_id)
        self.traffic.remove(agent)
        agent.stop()
        return agent

    def restart_agent(self, device_id: str) -> Agent:
        old = self.stop_agent(device_id)
        return self.agent(device_id, old.tasks.tasks, old.settings.device_class)

    def restart_server(self, engine: OnnxTestEngine | None = None, **settings: Any) -> FleetServer:
        self.server.stop()
        self.engine = engine or self.engine
        self.server_settings.update(settings)
        self.server = start_server(self.root / "fleet", self.engine, self.broker_url, **self.server_settings)
        return self.server

    def serving(self, device_id: str) -> str:
        return self.agents[device_id].status().artifact_id

    def wait_serving(self, device_id: str, tasks: list[str], timeout: float = WAIT_S) -> str:
        agent = self.agents[device_id]
        wait_until(lambda: sorted(agent.status().model_tasks) == sorted(tasks), timeout)
        return agent.status().artifact_id

    def store_size(self, artifact_id: str) -> float:
        assert self.server.store is not None
        return float(self.server.store.size(artifact_id))

    def swapped_to(self, device_id: str) -> list[str]:
        """Every artifact the server recorded this device swapping to (ok swaps), oldest first."""
        return [s["artifact_id"] for s in self.registry.offers.swaps(device_id, limit=1000)[::-1] if s["ok"]]

    # -- the dashboard's API, as a browser on this machine uses it ---------------------------------

    def api(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=WAIT_S) as r:
            return json.load(r)

    def command(self, device_id: str, action: str, **fields: Any) -> dict[str, Any]:
        """Send one operator command and wait for the device's ack; returns the landed record."""
        sent = self.api(f"/api/v1/devices/{device_id}/commands", {"action": action, **fields})
        cid = sent["command_id"]
        landed: dict[str, Any] = wait_until(
            lambda: (c := self.api(f"/api/v1/commands/{cid}"))["state"] != "sent" and c
        )
        return landed

    def close(self) -> None:
        self.traffic.stop()
        for a in self.agents.values():
            a.stop()
        self.server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Traffic:
    """One thread sending inference requests round-robin to the agents (~every 5 ms)."""

    def __init__(self, pause_s: float = 0.005) -> None:
        self._agents: list[Agent] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._image = np.random.default_rng(0).random((1, 3, SIZE, SIZE), dtype=np.float32)
        self._pause = pause_s
        self._thread = threading.Thread(target=self._run, name="test-traffic", daemon=True)
        self._thread.start()

    def add(self, agent: Agent) -> None:
        with self._lock:
            self._agents.append(agent)

    def remove(self, agent: Agent) -> None:
        with self._lock:
            self._agents.remove(agent)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                agents = list(self._agents)
            for agent in agents:
                with contextlib.suppress(AgentError):  # no model yet
                    agent.infer(self._image)
            time.sleep(self._pause)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
