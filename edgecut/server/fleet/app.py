"""One fleet server in-process: registry + store + jobs + gRPC + MQTT bridge, with start() / stop().

Beside them: the fleet's events (`observers`), the history they are recorded into, staged rollouts
(the bridge's offer gate) and, with `http` set, a front end started by the `dashboard` hook it is given:
edgecut.server.app (the composition root) passes the web dashboard; this package never imports web/.
Used by `edgecut server`, the demo and the tests (which bind gRPC to 127.0.0.1:0).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import grpc
from grpc_health.v1 import health, health_pb2

from edgecut import tls
from edgecut.errors import ConfigError
from edgecut.server.fleet.commands.desk import CommandDesk, open_operator_key
from edgecut.server.fleet.events import Observers
from edgecut.server.fleet.jobs.adapter import AdaptPolicy
from edgecut.server.fleet.jobs.manager import JobManager
from edgecut.server.fleet.jobs.rollout import RolloutManager
from edgecut.server.fleet.link.broker import BrokerAuth
from edgecut.server.fleet.link.grpc_api import SERVICE_NAME, FleetServicer, create_server
from edgecut.server.fleet.link.mqtt_bridge import MqttBridge
from edgecut.server.fleet.link.signer import FleetSigner
from edgecut.server.fleet.policy.broker_load import BrokerLoad
from edgecut.server.fleet.policy.budget import BudgetPolicy
from edgecut.server.fleet.policy.latency import measure_here
from edgecut.server.fleet.policy.limits import RateLimiter
from edgecut.server.fleet.settings import ServerSettings
from edgecut.server.fleet.state.history import FleetHistory
from edgecut.server.fleet.state.history_recorder import HistoryRecorder
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.store import Store
from edgecut.server.fleet.state.store_backends import open_store
from edgecut.server.spec import Engine

logger = logging.getLogger(__name__)


class Frontend(Protocol):
    """What the server needs of a front end it starts (the web dashboard): its URL and port, and a stop."""

    @property
    def url(self) -> str: ...

    @property
    def port(self) -> int: ...

    def stop(self) -> None: ...


# Starts a front end for a server whose registry, store and history are open (called from start()).
FrontendFactory = Callable[["FleetServer"], Frontend]


class FleetServer:
    def __init__(
        self,
        settings: ServerSettings,
        engine: Engine,
        embedded_broker: str = "",
        dashboard: FrontendFactory | None = None,
    ) -> None:
        """`embedded_broker`: the kind of broker edgecut started for this server (the demo, the benches),
        "" for an external one; on the embedded iotcore broker the server warns past what it serves well.
        `dashboard`: starts the front end that `settings.http` asks for (edgecut.server.app passes it)."""
        if settings.http and dashboard is None:
            raise ConfigError(
                f"http is set ({settings.http}) but this server has no dashboard to serve: "
                "start it through edgecut.server.app.build_server"
            )
        self.settings, self.engine = settings, engine
        self._start_dashboard = dashboard
        self.registry: Registry | None = None
        self.store: Store | None = None
        self.jobs: JobManager | None = None
        self.bridge: MqttBridge | None = None
        self.grpc_server: grpc.Server | None = None
        self.grpc_port = 0
        self.grpc_address = ""
        self.signer: FleetSigner | None = None
        self._health = health.HealthServicer()
        self._stop_scrub = threading.Event()
        self._scrubber: threading.Thread | None = None
        self.observers = Observers()
        if embedded_broker:
            self.observers.add(BrokerLoad(embedded_broker))
        self.policy = BudgetPolicy(settings.budget.classes)
        self.policy.latency.tolerance = settings.latency_tolerance
        self.policy.latency.sustain_s = settings.latency_sustain_s
        self.history: FleetHistory | None = None
        self.recorder: HistoryRecorder | None = None
        self.rollouts: RolloutManager | None = None
        self.commands: CommandDesk | None = None
        self.dashboard: Frontend | None = None

    def start(self) -> FleetServer:
        try:
            return self._start()
        except BaseException:
            self.stop()  # a half-started server (e.g. the HTTP port taken) leaves nothing running
            raise

    def _start(self) -> FleetServer:
        s = self.settings
        s.state_dir.mkdir(parents=True, exist_ok=True)
        lim = s.limits
        credentials = tls.server_credentials(s.grpc_tls_cert, s.grpc_tls_key, s.grpc_client_ca)
        self.signer = signer = FleetSigner.open(s.signing_key, s.state_dir)
        self.registry = registry = Registry(s.registry)
        self.store = store = open_store(s.store)
        policy, observers = self.policy, self.observers
        self.history = FleetHistory(registry, s.telemetry_samples)
        self.recorder = HistoryRecorder(self.history, store, s.latency_runs)
        observers.add(self.recorder)
        self.recorder.start()
        if s.latency_probe:
            self._spawn_latency_probe()
        builds = RateLimiter(lim.build_burst, lim.builds_per_minute)
        self.jobs = jobs = JobManager(
            self.engine,
            store,
            registry,
            s.workers,
            lim.max_queued_jobs,
            builds,
            observers,
            owner=s.owner,
            lease_s=s.lease_s,
            poll_s=s.job_poll_s,
            refine_workers=s.refine_workers,
            max_crashes=s.job_max_crashes,
            quick_floor=s.quick_min_delta_m,
            adapt_workers=s.adapt_workers,
            adapt_policy=AdaptPolicy(s.adapt_method, s.adapt_max_loss, s.limits.adapt_min_interval_s),
        )
        servicer = FleetServicer(
            store,
            jobs,
            policy,
            grpc_address="",
            chunk_size=s.chunk_size,
            signer=signer,
            registry=registry,
            request_limiter=RateLimiter(lim.needs_burst, lim.needs_per_minute),
            mutual_tls=s.grpc_client_ca is not None,
            observers=observers,
        )
        self.grpc_server, self.grpc_port = create_server(
            s.grpc, servicer, s.grpc_threads, self._health, credentials
        )
        self.grpc_address = servicer.grpc_address = s.public_grpc or _advertised(s.grpc, self.grpc_port)
        if s.broker:
            # Built before jobs.start() so its finish hook sees jobs resumed from the registry.
            self.bridge = MqttBridge(
                s.broker,
                jobs,
                registry,
                policy,
                self.grpc_address,
                signer,
                client_id=s.mqtt_client_id,
                protocol=s.mqtt_protocol,
                group=s.share_group,
                auth=BrokerAuth(
                    s.mqtt_ca_file,
                    s.mqtt_cert_file,
                    s.mqtt_key_file,
                    s.mqtt_username,
                    s.mqtt_password.get_secret_value(),
                ),
                needs_limiter=RateLimiter(lim.needs_burst, lim.needs_per_minute),
                stats_limiter=RateLimiter(lim.stats_burst, lim.stats_per_minute),
                observers=observers,
                lanes=s.mqtt_lanes,
            )
            if s.rollout.enabled:
                self.rollouts = RolloutManager(registry, store, s.rollout, observers)
                self.bridge.delivery.offer_gate = self.rollouts.gate
                self.bridge.delivery.refinement_hold = self.rollouts.refinements_held
                observers.add(self.rollouts)
            engine = self.engine
            self.commands = CommandDesk(
                registry,
                open_operator_key(s.operator_key, s.state_dir),
                self.bridge.publish_command,
                lambda: list(engine.tasks),
                observers,
            )
            observers.add(self.commands)
        if s.http and self._start_dashboard is not None:
            self.dashboard = self._start_dashboard(self)
        self.grpc_server.start()
        jobs.start()
        if lim.scrub_interval_s > 0:
            self._stop_scrub.clear()
            self._scrubber = threading.Thread(target=self._scrub_loop, name="edgecut-scrub", daemon=True)
            self._scrubber.start()
        if self.bridge is not None:
            if self.rollouts is not None:
                self.rollouts.start(self.bridge.delivery)
            self.bridge.start()
        logger.info(
            "fleet server %s: gRPC %s%s (devices told %s), broker %s, registry %s, store %s, base model %s, "
            "signing key %s, dashboard %s",
            jobs.owner,
            s.grpc,
            " mutual TLS" if s.grpc_client_ca else " TLS" if credentials else "",
            self.grpc_address,
            masked(s.broker) or "none",
            registry.url,
            s.store,
            self.engine.base_model_id,
            signer.key_id,
            self.dashboard.url if self.dashboard else "off",
        )
        return self

    def _spawn_latency_probe(self) -> None:
        """Seed the latency cost model in the background (about a second of ORT runs, 1 thread)."""

        def probe() -> None:
            try:
                model, _ = measure_here()
            except Exception:
                logger.exception("measuring onnxruntime latency failed; latency budgets use the table")
                return
            self.policy.latency.seed(model)

        threading.Thread(target=probe, name="edgecut-latency-probe", daemon=True).start()

    def _scrub_loop(self) -> None:
        """Hash the whole store every `scrub_interval_s`; corrupt artifacts are quarantined and rebuilt."""
        while not self._stop_scrub.wait(self.settings.limits.scrub_interval_s):
            jobs = self.jobs
            if jobs is None:
                return
            try:
                bad = jobs.scrubber.scrub()
            except Exception:
                logger.exception("store scrub failed")
                continue
            if bad:
                logger.error("store scrub: %d corrupt artifact(s) quarantined and queued again", len(bad))

    @property
    def http_url(self) -> str:
        """The dashboard's base URL ("" when `http` is off)."""
        return self.dashboard.url if self.dashboard is not None else ""

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
        self._stop_scrub.set()
        if self._scrubber is not None:
            self._scrubber.join(5)
            self._scrubber = None
        if self.dashboard is not None:
            self.dashboard.stop()
            self.dashboard = None
        if self.bridge is not None:
            self.bridge.stop()
            self.bridge = None
        if self.rollouts is not None:
            self.rollouts.stop()
            self.rollouts = None
        if self.jobs is not None:
            self.jobs.stop()  # open RequestModel streams get a FAILED "shutting down" event first
            self.jobs = None
        if self.recorder is not None:
            self.recorder.stop()  # writes what is queued
            self.recorder = None
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
