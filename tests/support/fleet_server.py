"""Helpers for the fleet service's tests: a whole server in-process, a device-side MQTT client, gRPC calls."""

from __future__ import annotations

import hashlib
import queue
import time
from pathlib import Path
from typing import Any

import grpc
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgecut import topics
from edgecut.server.app import build_server
from edgecut.server.fleet.app import FleetServer
from edgecut.server.fleet.settings import ServerSettings
from edgecut.v1 import fleet_pb2 as pb
from edgecut.v1 import fleet_pb2_grpc as pb_grpc

from .keys import fleet_key_path, operator_key, operator_key_path
from .onnx_engine import OnnxTestEngine
from .waiting import WAIT_S


def settings(state_dir: Path, broker_url: str = "", **kw: Any) -> ServerSettings:
    kw.setdefault("signing_key", fleet_key_path())  # the key test agents trust (tests/support/keys.py)
    operator_key()  # made once; the dashboard signs its commands with it and test agents trust it
    kw.setdefault("operator_key", operator_key_path())
    # the latency probe would move max_latency_ms budgets (and build keys) under a test a moment after
    # start; tests/unit/fleet/policy/test_latency.py measures it on its own
    kw.setdefault("latency_probe", False)
    return ServerSettings(state_dir=state_dir, broker=broker_url, grpc="127.0.0.1:0", **kw)


def start_server(state_dir: Path, engine: OnnxTestEngine, broker_url: str = "", **kw: Any) -> FleetServer:
    server = build_server(settings(state_dir, broker_url, **kw), engine).start()
    if not server.wait_ready(WAIT_S):
        server.stop()
        raise TimeoutError(f"fleet server's MQTT bridge did not subscribe within {WAIT_S:g} s")
    return server


def stub(address: str) -> tuple[grpc.Channel, pb_grpc.FleetServiceStub]:
    channel = grpc.insecure_channel(address)
    return channel, pb_grpc.FleetServiceStub(channel)


def download(
    fleet: pb_grpc.FleetServiceStub, artifact_id: str, offset: int = 0, stop_at: int | None = None
) -> bytes:
    """Bytes from `offset`; with `stop_at`, cancel the stream once that many bytes of the file are held."""
    parts: list[bytes] = []
    pos = offset
    call = fleet.DownloadModel(pb.DownloadRequest(artifact_id=artifact_id, offset=offset), timeout=30)
    for chunk in call:
        assert chunk.offset == pos, (chunk.offset, pos)
        parts.append(chunk.data)
        pos += len(chunk.data)
        if stop_at is not None and pos >= stop_at:
            call.cancel()
            break
    return b"".join(parts)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Device:
    """A device's MQTT side, as the agent speaks it: publishes needs, collects model/error messages."""

    def __init__(self, broker_url: str, device_id: str) -> None:
        host, port = broker_url.removeprefix("mqtt://").rsplit(":", 1)
        self.device_id = device_id
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{device_id}")
        subscribed = queue.Queue[bool]()
        self.client.on_message = lambda _c, _u, m: self.messages.put(
            (m.topic.rsplit("/", 1)[-1], bytes(m.payload), m.retain)
        )
        self.client.on_subscribe = lambda *_a: subscribed.put(True)
        self.client.connect(host, int(port))
        self.client.subscribe(
            [
                (topics.device_topic(device_id, topics.MODEL), 1),
                (topics.device_topic(device_id, topics.ERROR), 1),
            ]
        )
        self.client.loop_start()
        subscribed.get(timeout=WAIT_S)

    def publish(self, leaf: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topics.device_topic(self.device_id, leaf), payload, qos=1, retain=retain)
        info.wait_for_publish(5)

    def needs(self, tasks: list[str], seq: int = 1, **kw: Any) -> pb.TaskNeeds:
        resources = kw.pop("resources", pb.Resources(device_class="x86", cpu_count=4))
        msg = pb.TaskNeeds(device_id=self.device_id, tasks=tasks, seq=seq, resources=resources, **kw)
        self.publish(topics.NEEDS, msg.SerializeToString())
        return msg

    def next(self, leaf: str, timeout: float = WAIT_S) -> tuple[bytes, bool]:
        """The next message on `leaf` (model or error), skipping the other kind."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {leaf} message for {self.device_id} within {timeout} s")
            try:
                got, payload, retain = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            if got == leaf:
                return payload, retain

    def model_ready(self, timeout: float = WAIT_S) -> pb.ModelReady:
        return pb.ModelReady.FromString(self.next(topics.MODEL, timeout)[0])

    def error(self, timeout: float = WAIT_S) -> pb.Error:
        return pb.Error.FromString(self.next(topics.ERROR, timeout)[0])

    def close(self) -> None:
        self.client.disconnect()  # first, so the network loop ends at once
        self.client.loop_stop()
