"""Property tests of every MQTT payload and RPC request (issue 15): never a crash, never an INTERNAL for
user input, never a registry that cannot be read back.

Messages come from the protobuf descriptors (tests/support/proto_strategies.py), mixed with raw bytes.
The MQTT handlers are driven in-process (the broker adds nothing but delivery); the RPCs go through
real gRPC servers on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import grpc
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from edgecut import topics
from edgecut.agent.agent import Agent
from edgecut.agent.serve import create_server as create_agent_api
from edgecut.agent.settings import AgentSettings
from edgecut.server.fleet.app import FleetServer
from edgecut.server.fleet.jobs.manager import JobManager
from edgecut.server.fleet.link import mqtt_bridge
from edgecut.server.fleet.link.mqtt_bridge import MqttBridge
from edgecut.server.fleet.link.signer import FleetSigner
from edgecut.server.fleet.policy.budget import BudgetPolicy
from edgecut.server.fleet.policy.limits import RateLimiter
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.store import LocalStore
from edgecut.v1 import agent_pb2, fleet_pb2
from tests.support.agent_helpers import put
from tests.support.fleet_server import start_server
from tests.support.keys import fleet_key, operator_key
from tests.support.onnx_engine import OnnxTestEngine
from tests.support.onnx_models import build_model
from tests.support.proto_strategies import messages, payloads

USER_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
IN_TOPICS = {
    topics.NEEDS: fleet_pb2.TaskNeeds,
    topics.TELEMETRY: fleet_pb2.Telemetry,
    topics.SWAP: fleet_pb2.SwapReport,
    topics.STATE: fleet_pb2.DeviceState,
    topics.ACK: fleet_pb2.CommandAck,
    topics.STATS: fleet_pb2.StatsSummary,
}
device_ids = st.text(
    st.characters(blacklist_characters="/+#\x00", blacklist_categories=("Cs",)), min_size=1, max_size=40
)


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MqttBridge, Registry]]:
    d = tmp_path_factory.mktemp("bridge")
    registry = Registry(f"sqlite:///{d / 'r.sqlite3'}")
    jobs = JobManager(
        OnnxTestEngine(d / "engine"), LocalStore(d / "store"), registry, 1, 8, RateLimiter(5, 6)
    )
    jobs.start()
    b = MqttBridge(
        "mqtt://127.0.0.1:1",
        jobs,
        registry,
        BudgetPolicy(),
        "127.0.0.1:1",
        FleetSigner(fleet_key()),
        needs_limiter=RateLimiter(30, 60),
    )
    b.client = mock.Mock()  # what the bridge publishes is recorded, not sent
    yield b, registry
    jobs.stop()
    registry.close()


def _deliver(b: MqttBridge, topic: str, payload: bytes) -> None:
    msg = mqtt.MQTTMessage(topic=topic.encode())
    msg.payload = payload
    b._on_message(b.client, None, msg)


@given(leaf=st.sampled_from(sorted(IN_TOPICS)), device_id=device_ids, data=st.data())
@example(leaf=topics.NEEDS, device_id="d1", data=None)
def test_any_payload_on_any_server_topic(bridge, leaf: str, device_id: str, data) -> None:
    b, registry = bridge
    if data is None:  # the cases of issue 15, kept as regression examples
        payload = fleet_pb2.TaskNeeds(
            tasks=["seg"], seq=2**64 - 1, max_latency_ms=float("inf")
        ).SerializeToString()
    else:
        payload = data.draw(payloads(IN_TOPICS[leaf].DESCRIPTOR))
    b.client.publish.reset_mock()
    with mock.patch("edgecut.server.fleet.link.mqtt_bridge.logger") as log:
        _deliver(b, topics.device_topic(device_id, leaf), payload)
    assert not log.exception.called  # no handler raised
    for call in b.client.publish.call_args_list:
        topic, body = call.args[:2]
        if topic.endswith("/" + topics.ERROR):
            err = fleet_pb2.Error.FromString(body)
            assert err.code != fleet_pb2.Error.INTERNAL, err.message
        assert len(body) <= topics.MAX_PAYLOAD
    # the registry still reads back, whole and JSON-clean
    json.dumps(registry.devices.all(), default=str)
    assert registry.jobs.all() is not None


@pytest.fixture(scope="module")
def fleet_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetServer]:
    d = tmp_path_factory.mktemp("grpc")
    server = start_server(d / "state", OnnxTestEngine(d / "engine"))
    yield server
    server.stop()


def _no_internal(call) -> None:
    try:
        for _ in call:
            pass
    except grpc.RpcError as exc:
        assert exc.code() not in USER_CODES, (exc.code(), exc.details())


@given(request=messages(fleet_pb2.ModelRequest.DESCRIPTOR))
def test_any_model_request(fleet_server: FleetServer, request: fleet_pb2.ModelRequest) -> None:
    with grpc.insecure_channel(fleet_server.grpc_address) as ch:
        call = ch.unary_stream(
            "/edgecut.v1.FleetService/RequestModel", response_deserializer=fleet_pb2.JobProgress.FromString
        )
        _no_internal(call(request.SerializeToString(), timeout=20))


@given(request=messages(fleet_pb2.DownloadRequest.DESCRIPTOR), garbage=st.binary(max_size=200))
def test_any_download_request_and_raw_bytes(
    fleet_server: FleetServer, request: fleet_pb2.DownloadRequest, garbage: bytes
) -> None:
    with grpc.insecure_channel(fleet_server.grpc_address) as ch:
        for method, body in (("DownloadModel", request.SerializeToString()), ("DownloadModel", garbage)):
            _no_internal(ch.unary_stream(f"/edgecut.v1.FleetService/{method}")(body, timeout=10))
        _no_internal(ch.unary_stream("/edgecut.v1.FleetService/RequestModel")(garbage, timeout=10))


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    d = tmp_path_factory.mktemp("agent")
    a = Agent(
        AgentSettings(
            device_id="d1",
            state_dir=d,
            listen="127.0.0.1:0",
            tasks=["seg"],
            fleet_keys=[fleet_key().public_text],
            operator_keys=[operator_key().public_text],
        )
    )
    a.link._client = mock.Mock()  # never connected: what it would publish is recorded
    aid = put(a.store, build_model(["seg"]))
    assert a.runtime.install(aid).ok
    yield a


@given(
    kind=st.sampled_from(["model", "command", "error"]),
    data=st.data(),
)
def test_any_message_to_the_agent(agent: Agent, kind: str, data) -> None:
    serving = agent.runtime.slot.current
    cls = {"model": fleet_pb2.ModelReady, "command": fleet_pb2.Command, "error": fleet_pb2.Error}[kind]
    payload = data.draw(payloads(cls.DESCRIPTOR))
    msg = mqtt.MQTTMessage(topic=topics.device_topic("d1", kind).encode())
    msg.payload, msg.retain = payload, data.draw(st.booleans())
    with mock.patch("edgecut.agent.link_mqtt.logger") as log:
        agent.link._on_message(agent.link._client, None, msg)
    assert not log.exception.called  # no handler raised
    assert agent.runtime.slot.current is serving  # nobody but the fleet swaps the model
    assert agent.tasks.tasks == ["seg"]  # nobody but an operator changes the tasks


@pytest.fixture(scope="module")
def agent_api(agent: Agent) -> Iterator[str]:
    server, address = create_agent_api("127.0.0.1:0", agent, max_batch=4, max_bytes=1 << 20)
    server.start()
    yield address
    server.stop(0)


@given(
    method=st.sampled_from(["Infer", "Status", "SetTasks", "Rollback", "Unpin"]),
    data=st.data(),
)
def test_any_local_api_request(agent_api: str, agent: Agent, method: str, data) -> None:
    request_type = {
        "Infer": agent_pb2.InferRequest,
        "Status": agent_pb2.StatusRequest,
        "SetTasks": agent_pb2.SetTasksRequest,
        "Rollback": agent_pb2.RollbackRequest,
        "Unpin": agent_pb2.UnpinRequest,
    }[method]
    body = data.draw(payloads(request_type.DESCRIPTOR))
    if method == "Infer" and data.draw(st.booleans()):  # also well-formed tensors of any shape
        shape = data.draw(st.lists(st.integers(0, 70), max_size=5))
        n = int(np.prod(shape)) if shape else 1
        body = agent_pb2.InferRequest(
            image=agent_pb2.Tensor(shape=shape, data=b"\0" * min(n * 4, 1 << 21))
        ).SerializeToString()
    with grpc.insecure_channel(agent_api) as ch:
        try:
            ch.unary_unary(f"/edgecut.v1.AgentService/{method}")(body, timeout=20)
        except grpc.RpcError as exc:
            assert exc.code() not in USER_CODES, (exc.code(), exc.details())
    agent.tasks.set(["seg"])  # SetTasks may have changed them; the next example starts clean
    if agent.store.pinned:
        agent.store.set_pin(None)


def test_strategies_reach_every_message_type() -> None:
    """The fuzzed types are all of the wire contract's messages (a new one must be added here)."""
    fuzzed = {c.DESCRIPTOR.full_name for c in IN_TOPICS.values()} | {
        "edgecut.v1.ModelReady",
        "edgecut.v1.Command",
        "edgecut.v1.Error",
        "edgecut.v1.ModelRequest",
        "edgecut.v1.DownloadRequest",
    }
    wire_inputs = {
        d.full_name
        for d in fleet_pb2.DESCRIPTOR.message_types_by_name.values()
        if d.name
        not in {
            "Resources",
            "SetTasks",
            "Rollback",
            "Pin",
            "Unpin",
            "Budget",
            "JobProgress",
            "Chunk",
            "Signature",
        }
        and d.name not in {"TaskMetrics", "Manifest"}
        and d.name not in {"ModelVariant", "PrecisionTiming"}  # inside Manifest; Telemetry and SwapReport
        and d.name != "NormStats"  # inside StatsSummary
    }
    assert wire_inputs <= fuzzed, wire_inputs - fuzzed
    assert Path(__file__).exists()


def test_a_flood_of_invalid_device_ids_is_logged_once_with_a_count(bridge, caplog) -> None:
    """Issue 26: each message on a topic with an invalid device id logged a WARNING: a flood of them
    flooded the server's log."""
    b, _ = bridge
    b._bad_ids, b._bad_ids_said = 0, -mqtt_bridge.BAD_ID_LOG_S
    with caplog.at_level(logging.WARNING, logger="edgecut.server.fleet.link.mqtt_bridge"):
        for i in range(500):
            _deliver(b, topics.device_topic(f"bad%{i:03d}", topics.NEEDS), b"")
    assert len(caplog.records) == 1 and "not a valid device id" in caplog.text
    b._bad_ids_said -= mqtt_bridge.BAD_ID_LOG_S  # a minute later
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgecut.server.fleet.link.mqtt_bridge"):
        _deliver(b, topics.device_topic("bad%x", topics.NEEDS), b"")
    assert len(caplog.records) == 1 and "499 more such messages since the last report" in caplog.text
