"""Simulated devices for `edgecut bench fleet`: light MQTT + gRPC clients, many per process.

Each device speaks the agent's protocol without onnxruntime: one MQTT connection of its own (client id,
persistent session), needs published at every (re)connect and on each phase, every offer's signed
manifest verified against the fleet key (device, needs seq, then the downloaded bytes' sha256), the
artifact downloaded over gRPC and retried every second until it arrives. "Serving" here = the verified
bytes are held; loading them is what the real agent adds (docs/benchmarks.md measures that part).
"""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
import paho.mqtt.client as mqtt

from edgecut import signing, topics
from edgecut.envelopes import now_ms, open_offer
from edgecut.v1 import fleet_pb2 as pb
from edgecut.v1 import fleet_pb2_grpc as pb_grpc


@dataclass
class SimDevice:
    device_id: str
    phases: list[list[str]]  # tasks asked in phase 0, 1, ...
    phase: int = 0
    sent: dict[int, float] = field(default_factory=dict)  # seq -> wall time the needs went out
    served: dict[int, tuple[float, str, list[str]]] = field(
        default_factory=dict
    )  # seq -> (time, artifact, tasks)
    refused: int = 0
    retries: int = 0
    reasks: int = 0
    asked_at: float = 0.0  # monotonic time of the last needs
    offered: int = 0  # the seq an offer arrived for
    interval: float = 5.0  # like the agent's needs watchdog (reask.py), on a shorter first interval

    @property
    def seq(self) -> int:
        return self.phase + 1

    def needs(self) -> pb.TaskNeeds:
        return pb.TaskNeeds(
            device_id=self.device_id,
            tasks=self.phases[self.phase],
            seq=self.seq,
            resources=pb.Resources(device_class="x86", cpu_count=4),
            sent_unix_ms=now_ms(),
        )


class Worker:
    """The devices of one process; `run()` returns their records when `stop` is set."""

    def __init__(
        self, devices: list[SimDevice], broker_port: int, fleet_key: str, downloads: int = 8
    ) -> None:
        self.devices = {d.device_id: d for d in devices}
        self.port = broker_port
        self.keyring = signing.Keyring([signing.parse_public_key(fleet_key)])
        self.pool = ThreadPoolExecutor(downloads, thread_name_prefix="sim-dl")
        self.clients: dict[str, mqtt.Client] = {}
        self.channels: dict[str, grpc.Channel] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def _client(self, dev: SimDevice) -> mqtt.Client:
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"sim-{dev.device_id}", clean_session=False
        )
        c.reconnect_delay_set(1, 2)
        c.on_connect = lambda cl, u, f, rc, p: self._on_connect(cl, dev, rc)
        c.on_message = lambda cl, u, m: self._on_message(dev, m)
        c.connect_async("127.0.0.1", self.port, keepalive=30)
        c.loop_start()
        return c

    def _on_connect(self, client: mqtt.Client, dev: SimDevice, rc: Any) -> None:
        if rc.is_failure:
            return
        client.subscribe(topics.device_topic(dev.device_id, topics.MODEL), 1)
        self.publish_needs(dev)

    def publish_needs(self, dev: SimDevice) -> None:
        c = self.clients.get(dev.device_id)
        if c is None:
            return
        with self.lock:
            dev.sent.setdefault(dev.seq, time.time())
            dev.asked_at = time.monotonic()
            payload = dev.needs().SerializeToString()
        c.publish(topics.device_topic(dev.device_id, topics.NEEDS), payload, qos=1)

    def _on_message(self, dev: SimDevice, msg: mqtt.MQTTMessage) -> None:
        try:
            ready = pb.ModelReady.FromString(bytes(msg.payload))
            manifest = open_offer(self.keyring, ready)
        except Exception:
            dev.refused += 1
            return
        with self.lock:
            if manifest.device_id != dev.device_id or manifest.needs_seq != dev.seq or dev.seq in dev.served:
                return
            dev.offered = manifest.needs_seq
        self.pool.submit(self._download, dev, manifest)

    def _reask(self) -> None:
        """Needs that reached no server (it was down) are sent again until an offer answers them."""
        while not self.stopping.wait(1.0):
            now = time.monotonic()
            for dev in list(self.devices.values()):
                with self.lock:
                    due = dev.offered != dev.seq and now - dev.asked_at > dev.interval
                    if due:
                        dev.interval, dev.reasks = min(dev.interval * 2, 40.0), dev.reasks + 1
                if due:
                    self.publish_needs(dev)

    def _download(self, dev: SimDevice, manifest: pb.Manifest) -> None:
        while not self.stopping.is_set():
            with self.lock:
                if manifest.needs_seq != dev.seq or dev.seq in dev.served:
                    return
                ch = self.channels.get(manifest.grpc_address)
                if ch is None:
                    ch = self.channels[manifest.grpc_address] = grpc.insecure_channel(manifest.grpc_address)
            try:
                h, size = hashlib.sha256(), 0
                req = pb.DownloadRequest(artifact_id=manifest.artifact_id, device_id=dev.device_id)
                for chunk in pb_grpc.FleetServiceStub(ch).DownloadModel(req, timeout=30):
                    h.update(chunk.data)
                    size += len(chunk.data)
                if h.hexdigest() == manifest.sha256 and size == manifest.size_bytes:
                    with self.lock:
                        if manifest.needs_seq == dev.seq:
                            dev.served[dev.seq] = (time.time(), manifest.artifact_id, list(manifest.tasks))
                    return
            except grpc.RpcError:
                pass
            dev.retries += 1
            self.stopping.wait(1.0)

    def run(self, control: Any, results: Any, connect_per_s: float = 200.0) -> None:
        for dev in self.devices.values():
            self.clients[dev.device_id] = self._client(dev)
            time.sleep(1.0 / connect_per_s)  # a fleet does not all boot in the same millisecond
        threading.Thread(target=self._reask, name="sim-reask", daemon=True).start()
        phase = 0
        while True:
            cmd = control.get()
            if cmd == "stop":
                break
            if cmd == "next":
                phase += 1
                for dev in self.devices.values():
                    with self.lock:
                        dev.phase, dev.interval = phase, 5.0
                    self.publish_needs(dev)
            elif cmd == "report":
                results.put({d.device_id: _record(d) for d in self.devices.values()})
        self.stopping.set()
        for c in self.clients.values():
            c.disconnect()
            c.loop_stop()
        results.put({d.device_id: _record(d) for d in self.devices.values()})


def _record(d: SimDevice) -> dict[str, Any]:
    return {
        "phases": d.phases,
        "sent": d.sent,
        "served": d.served,
        "refused": d.refused,
        "retries": d.retries,
        "reasks": d.reasks,
    }


def worker_main(devices: list[SimDevice], port: int, key: str, control: Any, results: Any) -> None:
    """Entry point of a device process (multiprocessing, spawn)."""
    try:
        Worker(devices, port, key).run(control, results)
    except Exception as exc:  # the orchestrator must hear about it, not wait forever
        results.put({"error": repr(exc)})


__all__ = ["SimDevice", "Worker", "worker_main"]
