"""Test doubles for the fleet side where the real one cannot do what a test needs.

- DownloadServicer: FleetService.DownloadModel over real gRPC whose `drop_after` fails the next
  stream with UNAVAILABLE after that many bytes (a server killed mid-download, on cue).
- FakeFleet: answers a device's needs on the real broker with a retained ModelReady for the
  artifact registered for its tasks (stands in for edgecut.server.mqtt_bridge + jobs, which are
  not written yet); it also records needs, swap reports and states.
"""

from __future__ import annotations

import hashlib
import threading
from concurrent import futures

import grpc
import paho.mqtt.client as mqtt

from edgecut import topics
from edgecut.v1 import fleet_pb2, fleet_pb2_grpc


class DownloadServicer(fleet_pb2_grpc.FleetServiceServicer):
    def __init__(self, chunk_size: int = 4096) -> None:
        self.blobs: dict[str, bytes] = {}
        self.chunk_size = chunk_size
        self.drop_after: int | None = None
        self.requests: list[tuple[str, int]] = []  # (artifact id, offset) per call
        self.lie_sha: str | None = None  # announce this sha256 in every chunk (a server serving wrong bytes)

    def add(self, data: bytes, artifact_id: str | None = None) -> str:
        aid = artifact_id or hashlib.sha256(data).hexdigest()
        self.blobs[aid] = data
        return aid

    def DownloadModel(self, request, context):
        self.requests.append((request.artifact_id, request.offset))
        data = self.blobs.get(request.artifact_id)
        if data is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no artifact {request.artifact_id}")
        if request.offset > len(data):
            context.abort(grpc.StatusCode.OUT_OF_RANGE, "offset past the end")
        sha = self.lie_sha or hashlib.sha256(data).hexdigest()
        sent, drop, self.drop_after = 0, self.drop_after, None
        for off in range(request.offset, len(data), self.chunk_size):
            if drop is not None and sent >= drop:
                context.abort(grpc.StatusCode.UNAVAILABLE, "server went away")
            piece = data[off : off + self.chunk_size]
            sent += len(piece)
            yield fleet_pb2.Chunk(offset=off, data=piece, total_size=len(data), sha256=sha)


def start_download_server(servicer: DownloadServicer) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    fleet_pb2_grpc.add_FleetServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


class FakeFleet:
    """Answers each device's needs with the artifact registered for its (sorted) tasks."""

    def __init__(self, broker_port: int, grpc_address: str) -> None:
        self.grpc_address = grpc_address
        self.by_tasks: dict[tuple[str, ...], tuple[str, int]] = {}
        self.needs: list[fleet_pb2.TaskNeeds] = []
        self.swaps: list[fleet_pb2.SwapReport] = []
        self.states: list[fleet_pb2.DeviceState] = []
        self.changed = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fake-fleet")
        self.client.on_connect = lambda c, *a: c.subscribe(
            [(f"{topics.PREFIX}/+/{leaf}", 1) for leaf in (topics.NEEDS, topics.SWAP, topics.STATE)]
        )
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.connect("127.0.0.1", broker_port)
        self.client.loop_start()

    def register(self, tasks: list[str], artifact_id: str, size: int) -> None:
        """Answer needs for `tasks` with this artifact (served by the gRPC server at grpc_address)."""
        self.by_tasks[tuple(sorted(tasks))] = (artifact_id, size)

    def announce(self, device_id: str, tasks: list[str], seq: int = 0) -> None:
        aid, size = self.by_tasks[tuple(sorted(tasks))]
        msg = fleet_pb2.ModelReady(
            device_id=device_id,
            artifact_id=aid,
            sha256=aid,
            size_bytes=size,
            tasks=sorted(tasks),
            grpc_address=self.grpc_address,
            needs_seq=seq,
        )
        self.client.publish(
            topics.device_topic(device_id, topics.MODEL), msg.SerializeToString(), 1, retain=True
        )

    def _on_message(self, client, userdata, msg) -> None:
        leaf = msg.topic.rsplit("/", 1)[-1]
        with self.changed:
            if leaf == topics.NEEDS:
                needs = fleet_pb2.TaskNeeds.FromString(msg.payload)
                self.needs.append(needs)
                if tuple(sorted(needs.tasks)) in self.by_tasks:
                    self.announce(needs.device_id, list(needs.tasks), needs.seq)
            elif leaf == topics.SWAP:
                self.swaps.append(fleet_pb2.SwapReport.FromString(msg.payload))
            elif leaf == topics.STATE:
                self.states.append(fleet_pb2.DeviceState.FromString(msg.payload))
            self.changed.notify_all()

    def wait_for(self, predicate, timeout: float = 15.0) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
