"""One fleet server in-process: registry + store + jobs + gRPC + MQTT bridge, with start() / stop().

Used by `edgecut server`, the demo and the tests (which bind gRPC to 127.0.0.1:0).
"""

from __future__ import annotations

import logging
import socket
from urllib.parse import urlsplit, urlunsplit

import grpc
from grpc_health.v1 import health, health_pb2

from edgecut.server.fleet.budget_policy import BudgetPolicy
from edgecut.server.fleet.grpc_api import SERVICE_NAME, FleetServicer, create_server
from edgecut.server.fleet.jobs import JobManager
from edgecut.server.fleet.mqtt_bridge import MqttBridge
from edgecut.server.fleet.registry import Registry
from edgecut.server.fleet.settings import ServerSettings
from edgecut.server.fleet.store import Store, open_store
from edgecut.server.spec import Engine

logger = logging.getLogger(__name__)


class FleetServer:
    def __init__(self, settings: ServerSettings, engine: Engine) -> None:
        self.settings, self.engine = settings, engine
        self.registry: Registry | None = None
        self.store: Store | None = None
        self.jobs: JobManager | None = None
        self.bridge: MqttBridge | None = None
        self.grpc_server: grpc.Server | None = None
        self.grpc_port = 0
        self.grpc_address = ""
        self._health = health.HealthServicer()

    def start(self) -> FleetServer:
        s = self.settings
        s.state_dir.mkdir(parents=True, exist_ok=True)
        self.registry = registry = Registry(s.registry)
        self.store = store = open_store(s.store)
        policy = BudgetPolicy(s.budget.classes)
        self.jobs = jobs = JobManager(
            self.engine, store, registry, s.workers, owner=s.owner, lease_s=s.lease_s, poll_s=s.job_poll_s
        )
        servicer = FleetServicer(store, jobs, policy, grpc_address="", chunk_size=s.chunk_size)
        self.grpc_server, self.grpc_port = create_server(s.grpc, servicer, s.grpc_threads, self._health)
        self.grpc_address = servicer.grpc_address = s.public_grpc or _advertised(s.grpc, self.grpc_port)
        if s.broker:
            # Built before jobs.start() so its finish hook sees jobs resumed from the registry.
            self.bridge = MqttBridge(
                s.broker,
                jobs,
                registry,
                policy,
                self.grpc_address,
                client_id=s.mqtt_client_id,
                protocol=s.mqtt_protocol,
                group=s.share_group,
            )
        self.grpc_server.start()
        jobs.start()
        if self.bridge is not None:
            self.bridge.start()
        logger.info(
            "fleet server %s: gRPC %s (devices told %s), broker %s, registry %s, store %s, base model %s",
            jobs.owner,
            s.grpc,
            self.grpc_address,
            masked(s.broker) or "none",
            registry.url,
            s.store,
            self.engine.base_model_id,
        )
        return self

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """True once the MQTT bridge is connected and subscribed (immediately when MQTT is off)."""
        return self.bridge is None or self.bridge.ready.wait(timeout)

    def alive(self) -> bool:
        """The job threads run and gRPC is up (the systemd watchdog's check)."""
        return self.grpc_server is not None and self.jobs is not None and self.jobs.alive()

    def stop(self, grace: float = 2.0) -> None:
        """Stop taking work, interrupt builds (they resume at next start), close connections."""
        for name in ("", SERVICE_NAME):
            self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.bridge is not None:
            self.bridge.stop()
            self.bridge = None
        if self.jobs is not None:
            self.jobs.stop()  # open RequestModel streams get a FAILED "shutting down" event first
            self.jobs = None
        if self.grpc_server is not None:
            self.grpc_server.stop(grace).wait(grace + 1)
            self.grpc_server = None
        if self.registry is not None:
            self.registry.close()
            self.registry = None

    def __enter__(self) -> FleetServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def masked(url: str) -> str:
    """`url` without a password, for the log."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _advertised(listen: str, port: int) -> str:
    host = listen.rsplit(":", 1)[0].strip("[]") if ":" in listen else listen
    if host in ("", "0.0.0.0", "::"):
        host = socket.getfqdn()  # a wildcard is not an address a device can dial
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
