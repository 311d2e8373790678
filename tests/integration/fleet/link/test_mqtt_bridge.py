"""The fleet server against a real MQTT broker (mosquitto, else iotcore) and real gRPC on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecut import topics
from edgecut.broker import EmbeddedBroker
from edgecut.server.fleet.app import FleetServer
from edgecut.server.fleet.state.schema import RUNNING
from edgecut.server.spec import Budget
from edgecut.v1 import fleet_pb2 as pb
from tests.support.fleet_server import download, sha256, start_server, stub
from tests.support.onnx_engine import OnnxTestEngine
from tests.support.waiting import WAIT_S, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path, broker: EmbeddedBroker) -> Iterator[FleetServer]:
    s = start_server(tmp_path / "state", OnnxTestEngine(tmp_path / "work", delay=0.3), broker.url)
    yield s
    s.stop()


def test_needs_lead_to_a_retained_model_ready(server: FleetServer, devices, broker: EmbeddedBroker) -> None:
    dev = devices("rpi-1")
    dev.needs(["seg", "depth"], seq=3, resources=pb.Resources(device_class="rpi4", cpu_count=4))
    ready = dev.model_ready()
    assert ready.device_id == "rpi-1" and ready.needs_seq == 3 and not ready.cache_hit
    assert ready.tasks == ["depth", "seg"] and ready.grpc_address == server.grpc_address
    channel, fleet = stub(ready.grpc_address)
    try:
        assert sha256(download(fleet, ready.artifact_id)) == ready.sha256
    finally:
        channel.close()
    # retained: a client that connects later (the device after a reboot) still finds it
    late = devices("rpi-1")
    payload, retained = late.next(topics.MODEL)
    assert retained and pb.ModelReady.FromString(payload) == ready
    assert server.registry is not None
    rec = server.registry.devices.get("rpi-1")
    assert rec is not None and rec["needs_tasks"] == ["seg", "depth"] and rec["device_class"] == "rpi4"
    assert (
        rec["budget"] == Budget(macs_fraction=0.3).bucket()
        and rec["offered_artifact_id"] == ready.artifact_id
    )
    # a second device with the same needs is answered from the store
    other = devices("rpi-2")
    other.needs(["depth", "seg"], resources=pb.Resources(device_class="rpi4"))
    hit = other.model_ready()
    assert hit.cache_hit and hit.artifact_id == ready.artifact_id


def test_bad_payloads_get_clear_errors_and_the_server_keeps_serving(server: FleetServer, devices) -> None:
    dev = devices("cam-9")
    dev.publish(topics.NEEDS, b"\xff\xff\xff\xff")
    err = dev.error()
    assert err.code == pb.Error.MALFORMED and err.device_id == "cam-9"
    assert "edgecut.v1.TaskNeeds" in err.message

    dev.needs(["seg", "sky"], seq=2)
    err = dev.error()
    assert err.code == pb.Error.UNKNOWN_TASK and err.needs_seq == 2
    assert err.message == "unknown task 'sky': this model knows seg, depth, normals, edges, count"

    dev.needs(["seg"], seq=3, max_latency_ms=1e-5)  # a few MACs: smaller than any model
    err = dev.error()
    assert err.code == pb.Error.IMPOSSIBLE_BUDGET and err.needs_seq == 3
    assert "below the smallest model for seg" in err.message

    dev.needs([], seq=4)
    assert dev.error().code == pb.Error.EMPTY_TASKS

    dev.publish(topics.TELEMETRY, b"\x0a\xff")  # truncated length-delimited field
    assert dev.error().code == pb.Error.MALFORMED

    assert server.registry is not None
    rec = server.registry.devices.get("cam-9")
    assert rec is not None and "at least one task" in rec["last_error"]
    dev.needs(["edges"], seq=5)
    ready = dev.model_ready()
    assert ready.needs_seq == 5 and ready.tasks == ["edges"]
    assert server.registry.devices.get("cam-9")["last_error"] == ""  # type: ignore[index]


def test_state_telemetry_and_swaps_reach_the_registry(server: FleetServer, devices) -> None:
    dev = devices("jet-1")
    aid = "ab" * 32
    dev.publish(
        topics.STATE,
        pb.DeviceState(
            device_id="jet-1",
            status=pb.DeviceState.ONLINE,
            agent_version="0.1.0",
            tasks=["seg"],
            artifact_id=aid,
        ).SerializeToString(),
        retain=True,
    )
    dev.publish(
        topics.TELEMETRY,
        pb.Telemetry(
            device_id="jet-1", latency_p50_ms=7.5, inference_count=12, artifact_id=aid
        ).SerializeToString(),
    )
    dev.publish(
        topics.SWAP,
        pb.SwapReport(
            device_id="jet-1",
            artifact_id="cd" * 32,
            ok=False,
            reason="outputs not finite",
            previous_artifact_id=aid,
        ).SerializeToString(),
    )
    reg = server.registry
    assert reg is not None
    wait_until(
        lambda: (
            (d := reg.devices.get("jet-1"))
            and d["telemetry"]
            and d["status"] == "online"
            and reg.offers.swaps("jet-1")
        )
    )
    rec = reg.devices.get("jet-1")
    assert rec is not None
    assert rec["agent_version"] == "0.1.0" and rec["telemetry"]["latency_p50_ms"] == 7.5
    assert rec["artifact_id"] == aid  # the refused swap left the serving model as it was
    assert reg.offers.swaps("jet-1")[0]["reason"] == "outputs not finite"


def test_the_bridge_reconnects_and_resubscribes_after_the_broker_restarts(
    server: FleetServer, broker: EmbeddedBroker, devices
) -> None:
    assert server.bridge is not None
    broker.stop()
    wait_until(lambda: not server.bridge.ready.is_set())  # type: ignore[union-attr]
    broker.start()
    assert server.bridge.ready.wait(15)
    dev = devices("back-1")
    dev.needs(["count"], seq=1)
    assert dev.model_ready().tasks == ["count"]


def test_restart_with_a_queued_job_finishes_it(tmp_path: Path, broker: EmbeddedBroker, devices) -> None:
    state = tmp_path / "state"
    slow = OnnxTestEngine(tmp_path / "w1", delay=4.0)
    first = start_server(state, slow, broker.url)
    a, b = devices("dev-a"), devices("dev-b")
    try:
        a.needs(["seg"], seq=1)
        b.needs(["depth", "normals"], seq=1)  # queued behind dev-a's build (one worker)
        assert first.registry is not None
        reg = first.registry
        wait_until(lambda: len(reg.jobs.all()) == 2 and any(j.state == RUNNING for j in reg.jobs.all()))
    finally:
        first.stop()
    assert len(slow.builds) == 1  # dev-b's job never started

    fast = OnnxTestEngine(tmp_path / "w2", delay=0.1)
    second = start_server(state, fast, broker.url)
    try:
        ra, rb = a.model_ready(timeout=WAIT_S), b.model_ready(timeout=WAIT_S)
        assert ra.tasks == ["seg"] and rb.tasks == ["depth", "normals"]
        assert ra.grpc_address == second.grpc_address and rb.needs_seq == 1
        assert sorted(s.tasks for s in fast.builds) == [("depth", "normals"), ("seg",)]
    finally:
        second.stop()


def test_replicas_split_needs_through_the_shared_subscription(
    tmp_path: Path, broker: EmbeddedBroker, devices
) -> None:
    engine = OnnxTestEngine(tmp_path / "w")
    r1 = start_server(tmp_path / "r1", engine, broker.url)
    r2 = start_server(tmp_path / "r2", engine, broker.url)
    try:
        devs = [devices(f"d{i}") for i in range(8)]
        for d in devs:
            d.needs(["edges"])
        for d in devs:
            d.model_ready()
        counts = [len(r.registry.devices.all()) for r in (r1, r2)]  # type: ignore[union-attr]
        assert sum(counts) == 8 and min(counts) >= 1  # each message handled once, by one of them
    finally:
        r1.stop()
        r2.stop()
