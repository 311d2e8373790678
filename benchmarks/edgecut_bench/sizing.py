"""`edgecut bench sizing`: what one fleet server replica handles, to size a fleet (docs/operations.md).

1. Builds per hour per core: the real engine builds `builds` distinct needs one after another, one
   worker, torch on one thread (the server's defaults, recovery included). A replica with W workers on
   W cores builds about W times as many.
2. Device messages per second: `devices` simulated devices (MQTT clients, each publishing for many
   device ids) send needs that hit the cache (the keys built in 1), then telemetry; the replica's MQTT
   bridge records each one in the registry (SQLite, or PostgreSQL with `registry_url`). Timed from the
   first publish until every device's message is on record.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from edgecut.errors import ConfigError
from edgecut.server.spec import NO_FLOOR

SECTION = "Fleet sizing"
# (tasks, device class): distinct needs, so distinct build keys
NEEDS = [
    (["seg", "depth"], "rpi4"),
    (["seg", "depth", "normals"], "jetson-nano"),
    (["count", "edges"], "x86"),
]
PUBLISHERS = 4


@dataclass
class SizingResult:
    registry: str
    devices: int
    recovery_steps: int | None = None  # None: the server's default
    builds: list[tuple[str, str, float]] = field(default_factory=list)  # tasks, class, seconds
    needs_s: float = 0.0
    telemetry_s: float = 0.0
    rss_mb: float = 0.0

    @property
    def builds_per_hour_per_core(self) -> float:
        return 3600.0 / statistics.median(s for *_, s in self.builds) if self.builds else 0.0


def _say(msg: str) -> None:
    print(f"[bench sizing] {msg}", file=sys.stderr, flush=True)


def run(
    checkpoint: Path,
    data_dir: Path,
    devices: int,
    builds: int,
    registry_url: str,
    recovery_steps: int | None = None,
) -> SizingResult:
    import torch

    from edgecut.broker import EmbeddedBroker
    from edgecut.server.engine import load_engine
    from edgecut.server.fleet.app import FleetServer
    from edgecut.server.fleet.settings import ServerSettings

    if not 1 <= builds <= len(NEEDS):
        raise ConfigError(f"--builds must be between 1 and {len(NEEDS)}")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="edgecut-sizing-") as work, EmbeddedBroker() as broker:
        engine = load_engine(
            checkpoint, data_dir, n_calib=256, n_val=64, recovery_steps=recovery_steps, min_delta_m=NO_FLOOR
        )
        settings = ServerSettings(
            state_dir=Path(work), broker=broker.url, grpc="127.0.0.1:0", workers=1, registry_url=registry_url
        )
        server = FleetServer(settings, engine).start()
        try:
            if not server.wait_ready(30):
                raise ConfigError("the fleet server's MQTT bridge did not subscribe within 30 s")
            assert server.registry is not None
            names = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}
            result = SizingResult(
                names.get(server.registry.dialect, server.registry.dialect), devices, recovery_steps
            )
            _time_builds(server, result, builds)
            _time_messages(server, broker.host, broker.port, result, builds)
            result.rss_mb = psutil.Process().memory_info().rss / 2**20
            return result
        finally:
            server.stop()


def _time_builds(server: object, result: SizingResult, n: int) -> None:
    from edgecut.server.fleet.app import FleetServer
    from edgecut.server.fleet.jobs.outcomes import Event, Failed, Ready
    from edgecut.server.spec import BuildSpec
    from edgecut.v1 import fleet_pb2 as pb

    assert isinstance(server, FleetServer) and server.jobs is not None
    policy = server.bridge.policy if server.bridge is not None else None
    assert policy is not None
    for tasks, device_class in NEEDS[:n]:
        budget = policy.decide(pb.Resources(device_class=device_class)).budget
        done = threading.Event()
        outcome: list[Event] = []

        def listen(e: Event, outcome: list[Event] = outcome, done: threading.Event = done) -> None:
            if isinstance(e, Ready | Failed):
                outcome.append(e)
                done.set()

        _say(f"building {','.join(tasks)} for {device_class}")
        t = time.monotonic()
        server.jobs.submit(BuildSpec.create(tasks, budget), listener=listen)
        if not done.wait(1800):
            raise ConfigError(f"the build of {tasks} did not finish within 30 min")
        if isinstance(outcome[0], Failed):
            raise ConfigError(f"the build of {tasks} failed: {outcome[0].message}")
        result.builds.append((",".join(tasks), device_class, time.monotonic() - t))


def _time_messages(server: object, host: str, port: int, result: SizingResult, kinds: int) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edgecut import topics
    from edgecut.server.fleet.app import FleetServer
    from edgecut.v1 import fleet_pb2 as pb

    assert isinstance(server, FleetServer) and server.registry is not None
    registry = server.registry
    clients = []
    for i in range(PUBLISHERS):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sizing-{i}")
        c.max_inflight_messages_set(100)
        c.connect(host, port)
        c.loop_start()
        clients.append(c)
    ids = [f"sim-{i:05d}" for i in range(result.devices)]
    try:
        _say(f"{result.devices} devices send needs (cache hits)")
        t = time.monotonic()
        for i, dev in enumerate(ids):
            tasks, device_class = NEEDS[i % kinds]
            msg = pb.TaskNeeds(
                device_id=dev,
                tasks=tasks,
                seq=1,
                resources=pb.Resources(device_class=device_class, cpu_count=4),
            )
            clients[i % PUBLISHERS].publish(
                topics.device_topic(dev, topics.NEEDS), msg.SerializeToString(), qos=1
            )
        _wait(
            lambda: sum(1 for d in registry.devices.all() if d["offered_artifact_id"]) >= result.devices,
            "needs",
        )
        result.needs_s = result.devices / (time.monotonic() - t)
        _say(f"{result.devices} devices send telemetry")
        t = time.monotonic()
        for i, dev in enumerate(ids):
            tele = pb.Telemetry(device_id=dev, inference_count=7, latency_p50_ms=12.0)
            clients[i % PUBLISHERS].publish(
                topics.device_topic(dev, topics.TELEMETRY), tele.SerializeToString(), qos=1
            )
        _wait(
            lambda: (
                sum(1 for d in registry.devices.all() if d["telemetry"].get("inference_count") in (7, "7"))
                >= result.devices
            ),
            "telemetry",
        )
        result.telemetry_s = result.devices / (time.monotonic() - t)
    finally:
        for c in clients:
            c.disconnect()
            c.loop_stop()


def _wait(pred: object, what: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise ConfigError(f"the replica did not record every device's {what} within {timeout:g} s")
        time.sleep(0.25)


def table(r: SizingResult, command: str) -> str:
    interval = 30.0  # the agent's default telemetry_interval_s
    per_replica = int(r.telemetry_s * interval * 0.5)
    recovery = (
        "the server's defaults (recovery 200 steps capped at 60 s)"
        if r.recovery_steps is None
        else f"{r.recovery_steps} recovery steps (not the server's default)"
    )
    lines = [
        "What one server replica handles, measured on this machine (x86_64, 2 cores, shared with other "
        f"jobs). Builds: the real engine with {recovery}, one "
        f"worker, torch on 1 thread. Messages: {r.devices} simulated devices over {PUBLISHERS} MQTT "
        f"connections, recorded in a {r.registry} registry by the replica's MQTT bridge (one thread); QoS 1. "
        f"Rerun: `{command}`.",
        "",
        "| build | device class | seconds |",
        "|---|---|---:|",
        *[f"| {t} | {c} | {s:.1f} |" for t, c, s in r.builds],
        "",
        "| figure | value |",
        "|---|---:|",
        f"| builds per hour per core (median build) | **{r.builds_per_hour_per_core:.0f}** |",
        f"| needs answered from the cache, per second | {r.needs_s:.0f} |",
        f"| telemetry messages recorded per second | {r.telemetry_s:.0f} |",
        f"| devices per replica at one telemetry message per {interval:.0f} s, half the capacity | **{per_replica}** |",
        f"| replica RSS after the run (engine loaded) | {r.rss_mb:.0f} MiB |",
    ]
    return "\n".join(lines)
