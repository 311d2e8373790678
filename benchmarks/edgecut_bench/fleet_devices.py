"""Simulated devices for `edgecut bench fleet`: light MQTT + gRPC clients, many per process.

Each device speaks the agent's protocol without onnxruntime: one MQTT connection of its own (client id,
clean session), needs published at every (re)connect and on each phase, every offer's signed
manifest verified against the fleet key (device, needs seq, then the downloaded bytes' sha256), the
artifact downloaded over gRPC and retried every second until it arrives. "Serving" here = the verified
bytes are held; loading them is what the real agent adds (docs/benchmarks.md measures that part).
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import random
import selectors
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc
import paho.mqtt.client as mqtt

from edgecut import signing, topics
from edgecut.envelopes import now_ms, open_offer
from edgecut.v1 import fleet_pb2 as pb
from edgecut.v1 import fleet_pb2_grpc as pb_grpc

# Unanswered needs are sent again after 30 s, doubling up to 300 s: the agent's NeedsWatchdog defaults.
REASK_FIRST_S, REASK_MAX_S = 30.0, 300.0


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
    interval: float = REASK_FIRST_S  # the agent's needs watchdog (agent/reask.py), same schedule

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
    """The devices of one process; `run()` returns their records when `stop` is set.

    One thread drives every device's MQTT connection through a selector (paho's external loop:
    `loop_read`/`loop_write`/`loop_misc`): a thread per connection, as `loop_start` makes, put 1,250
    threads in each process at 10,000 devices and the machine's load past 200.
    """

    def __init__(
        self,
        devices: list[SimDevice],
        broker_port: int,
        fleet_key: str,
        downloads: int = 8,
        source_address: str = "",
    ) -> None:
        self.devices = {d.device_id: d for d in devices}
        self.port = broker_port
        self.source_address = source_address
        self.keyring = signing.Keyring([signing.parse_public_key(fleet_key)])
        self.pool = ThreadPoolExecutor(downloads, thread_name_prefix="sim-dl")
        self.clients: dict[str, mqtt.Client] = {}
        self.channels: dict[str, grpc.Channel] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.sel = selectors.DefaultSelector()
        self.calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()  # run on the loop thread
        self.down: dict[str, float] = {}  # device -> monotonic time of its next connection attempt

    # -- the loop thread: every call below runs on it ------------------------------------------------

    def _client(self, dev: SimDevice) -> mqtt.Client:
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"sim-{dev.device_id}", clean_session=True
        )  # clean, like the agent's (a queued message must not outlive a disconnect)
        c.on_connect = lambda cl, u, f, rc, p: self._on_connect(cl, dev, rc)
        c.on_message = lambda cl, u, m: self._on_message(dev, m)
        c.on_disconnect = lambda cl, u, f, rc, p: self._retry(dev)
        c.on_socket_open = lambda cl, u, sock: self._register(sock, cl)
        c.on_socket_close = lambda cl, u, sock: self._forget(sock)
        c.on_socket_register_write = lambda cl, u, sock: self._watch(sock, cl, True)
        c.on_socket_unregister_write = lambda cl, u, sock: self._watch(sock, cl, False)
        return c

    def _connect(self, dev: SimDevice) -> None:
        c = self.clients.get(dev.device_id)
        try:
            if c is None:
                c = self.clients[dev.device_id] = self._client(dev)
                c.connect("127.0.0.1", self.port, keepalive=30, bind_address=self.source_address)
            else:
                c.reconnect()
        except OSError:  # the broker is down (restart fault): try again
            self._retry(dev)

    def _retry(self, dev: SimDevice) -> None:
        self.down[dev.device_id] = time.monotonic() + random.uniform(1.0, 2.0)

    def _register(self, sock: Any, client: mqtt.Client) -> None:
        self.sel.register(sock, selectors.EVENT_READ, client)

    def _forget(self, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(sock)

    def _watch(self, sock: Any, client: mqtt.Client, write: bool) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.modify(sock, events, client)

    def _loop(self) -> None:
        misc_at = 0.0
        while not self.stopping.is_set():
            while True:
                try:
                    self.calls.get_nowait()()
                except queue.Empty:
                    break
            for key, mask in self.sel.select(timeout=0.05) if self.sel.get_map() else ():
                c = key.data
                if mask & selectors.EVENT_READ:
                    c.loop_read()
                if mask & selectors.EVENT_WRITE and c.socket() is not None:
                    c.loop_write()
            if not self.sel.get_map():
                time.sleep(0.05)
            now = time.monotonic()
            if now - misc_at >= 1.0:
                misc_at = now
                for c in list(self.clients.values()):
                    c.loop_misc()  # keepalive pings
                for device_id, when in list(self.down.items()):
                    if now >= when:
                        del self.down[device_id]
                        self._connect(self.devices[device_id])

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

    # -- other threads -------------------------------------------------------------------------------

    def _reask(self) -> None:
        """Needs that reached no server (it was down) are sent again until an offer answers them."""
        while not self.stopping.wait(1.0):
            now = time.monotonic()
            for dev in list(self.devices.values()):
                with self.lock:
                    due = dev.offered != dev.seq and now - dev.asked_at > dev.interval
                    if due:
                        dev.interval, dev.reasks = min(dev.interval * 2, REASK_MAX_S), dev.reasks + 1
                if due:
                    self.calls.put(partial(self.publish_needs, dev))

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
        loop = threading.Thread(target=self._loop, name="sim-mqtt", daemon=True)
        loop.start()
        for dev in self.devices.values():
            self.calls.put(partial(self._connect, dev))
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
                        dev.phase, dev.interval = phase, REASK_FIRST_S
                    self.calls.put(partial(self.publish_needs, dev))
            elif cmd == "report":
                with self.lock:
                    results.put({d.device_id: _record(d) for d in self.devices.values()})
        self.stopping.set()
        loop.join(10)
        for c in self.clients.values():
            c.disconnect()
            c.loop_write()  # the DISCONNECT packet: the broker sees a clean end, not a dropped link
        with self.lock:
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


def worker_main(
    devices: list[SimDevice], port: int, key: str, control: Any, results: Any, index: int = 0
) -> None:
    """Entry point of a device process (multiprocessing, spawn)."""
    # paho binds every connection before connecting, and a bound port is exclusive on its address: on
    # one loopback address, 10,000 devices plus their reconnections run out of the kernel's ~28,000
    # ephemeral ports (EADDRINUSE). Each process has its own loopback source address (127.0.0.0/8 is
    # all loopback on Linux), so each has the whole range.
    source = f"127.0.{1 + index % 250}.1"
    try:
        Worker(devices, port, key, source_address=source).run(control, results)
    except Exception as exc:  # the orchestrator must hear about it, not wait forever
        results.put({"error": repr(exc)})


__all__ = ["SimDevice", "Worker", "worker_main"]
