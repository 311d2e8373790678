"""A minimal FleetService.DownloadModel for the download faults the real server cannot produce on cue.

`DownloadServicer` serves blobs over real gRPC and records each call's (artifact id, offset). Its
`drop_after` fails the next stream with UNAVAILABLE after that many bytes (a server killed
mid-download, at an exact byte); `lie_sha` announces a wrong sha256 in every chunk (the real server
always announces the artifact id, which is the sha256 of what it stores). Every other agent test
runs against the real fleet server (tests/integration/agent/conftest.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc

from edgecut.v1 import fleet_pb2, fleet_pb2_grpc


class DownloadServicer(fleet_pb2_grpc.FleetServiceServicer):
    def __init__(self, chunk_size: int = 4096) -> None:
        self.blobs: dict[str, bytes] = {}
        self.chunk_size = chunk_size
        self.drop_after: int | None = None
        self.requests: list[tuple[str, int]] = []  # (artifact id, offset) per call
        self.lie_sha: str | None = None  # announce this sha256 in every chunk (a server serving wrong bytes)
        self.on_chunk: Callable[[int], None] | None = (
            None  # called with each chunk's offset before it is sent
        )
        self.unavailable: dict[str, int] = {}  # artifact id -> how many more calls fail UNAVAILABLE

    def add(self, data: bytes, artifact_id: str | None = None) -> str:
        aid = artifact_id or hashlib.sha256(data).hexdigest()
        self.blobs[aid] = data
        return aid

    def DownloadModel(
        self, request: fleet_pb2.DownloadRequest, context: grpc.ServicerContext
    ) -> Iterator[fleet_pb2.Chunk]:
        self.requests.append((request.artifact_id, request.offset))
        if self.unavailable.get(request.artifact_id, 0) > 0:
            self.unavailable[request.artifact_id] -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "network down")
        data = self.blobs.get(request.artifact_id)
        if data is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no artifact {request.artifact_id}")
            return  # abort() raises; this line is for the type checker
        if request.offset > len(data):
            context.abort(grpc.StatusCode.OUT_OF_RANGE, "offset past the end")
        sha = self.lie_sha or hashlib.sha256(data).hexdigest()
        sent, drop, self.drop_after = 0, self.drop_after, None
        for off in range(request.offset, len(data), self.chunk_size):
            if drop is not None and sent >= drop:
                context.abort(grpc.StatusCode.UNAVAILABLE, "server went away")
            if self.on_chunk is not None:
                self.on_chunk(off)
            piece = data[off : off + self.chunk_size]
            sent += len(piece)
            yield fleet_pb2.Chunk(offset=off, data=piece, total_size=len(data), sha256=sha)


def start_download_server(servicer: DownloadServicer) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    fleet_pb2_grpc.add_FleetServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"
