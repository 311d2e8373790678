"""DownloadModel throughput on loopback: a real gRPC server and client, a random artifact, a few chunk sizes.

Each run downloads the whole artifact from offset 0, checks its sha256, and also resumes one download
from 40 % (the interrupted-transfer path), so the table shows what a device actually gets.
"""

from __future__ import annotations

import hashlib
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from edgecut.model_meta import InputSpec, ModelMeta
from edgecut.server.fleet.link.grpc_api import FleetServicer, create_server
from edgecut.server.fleet.policy.budget import BudgetPolicy
from edgecut.server.fleet.state.store import LocalStore
from edgecut.v1 import fleet_pb2 as pb
from edgecut.v1 import fleet_pb2_grpc as pb_grpc

SECTION = "Fleet service"  # its `## ` section in docs/benchmarks.md (edgecut.doc_sections)


@dataclass(frozen=True)
class Row:
    chunk_bytes: int
    size_bytes: int
    seconds: list[float]
    resume_seconds: float

    @property
    def median_mb_s(self) -> float:
        return self.size_bytes / statistics.median(self.seconds) / 1e6

    @property
    def best_mb_s(self) -> float:
        return self.size_bytes / min(self.seconds) / 1e6


def _fetch(fleet: pb_grpc.FleetServiceStub, artifact_id: str, offset: int = 0) -> bytes:
    parts = [c.data for c in fleet.DownloadModel(pb.DownloadRequest(artifact_id=artifact_id, offset=offset))]
    return b"".join(parts)


def run(size_bytes: int, chunk_sizes: list[int], repeats: int) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgecut-bench-dl-") as tmp:
        src = Path(tmp) / "artifact.bin"
        data = os.urandom(size_bytes)
        src.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        store = LocalStore(Path(tmp) / "store")
        meta = ModelMeta(
            base_model="bench",
            tasks=["bench"],
            outputs={},
            params=0,
            macs=0,
            full_params=0,
            full_macs=0,
            input=InputSpec(shape=[None, 3, 64, 64], mean=[0.0] * 3, std=[1.0] * 3),
        )
        aid = store.put_file(src, meta).artifact_id
        for chunk in chunk_sizes:
            servicer = FleetServicer(store, None, BudgetPolicy(), "", chunk_size=chunk)
            server, port = create_server("127.0.0.1:0", servicer, max_workers=4)
            server.start()
            try:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                    fleet = pb_grpc.FleetServiceStub(channel)
                    _fetch(fleet, aid)  # warm-up: connection set-up and page cache
                    seconds = []
                    for _ in range(repeats):
                        t0 = time.perf_counter()
                        got = _fetch(fleet, aid)
                        seconds.append(time.perf_counter() - t0)
                        if hashlib.sha256(got).hexdigest() != digest:
                            raise RuntimeError(f"chunk {chunk}: downloaded bytes do not match the sha256")
                    cut = int(size_bytes * 0.4)
                    t0 = time.perf_counter()
                    rest = _fetch(fleet, aid, cut)
                    resume = time.perf_counter() - t0
                    if hashlib.sha256(data[:cut] + rest).hexdigest() != digest:
                        raise RuntimeError(f"chunk {chunk}: resumed download does not match the sha256")
            finally:
                server.stop(None)
            rows.append(Row(chunk, size_bytes, seconds, resume))
    return rows


def table(rows: list[Row], command: str) -> str:
    cpu = os.cpu_count() or 0
    lines = [
        f"`DownloadModel` throughput on loopback (127.0.0.1), real gRPC server and client in one process, "
        f"{rows[0].size_bytes / 2**20:.0f} MiB random artifact, sha256 checked after every download. "
        f"Machine: {cpu}-core {platform.machine()} sandbox, Python {platform.python_version()}, "
        f"grpcio {grpc.__version__}. Rerun: `{command}`.",
        "",
        "| chunk | downloads | median s | median MB/s | best MB/s | resume from 40 % (s) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.chunk_bytes // 1024} KiB | {len(r.seconds)} | {statistics.median(r.seconds):.3f} | "
            f"{r.median_mb_s:.0f} | {r.best_mb_s:.0f} | {r.resume_seconds:.3f} |"
        )
    return "\n".join(lines) + "\n"
