"""The artifact store contract on every backend: a local directory and S3 (a real S3 server, moto).

Plus what only S3 has: bucket errors at start-up, and downloads streamed chunk by chunk (a replica must
not hold a whole artifact in memory to serve it).
"""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from edgecut.errors import ConfigError
from edgecut.server.errors import ArtifactNotFoundError
from edgecut.server.fleet.link.grpc_api import FleetServicer, create_server
from edgecut.server.fleet.policy.budget import BudgetPolicy
from edgecut.server.fleet.state.store import Store
from edgecut.server.fleet.state.store_backends import open_store
from edgecut.v1 import fleet_pb2 as pb
from edgecut.v1 import fleet_pb2_grpc as pb_grpc
from tests.support.onnx_models import tiny_meta
from tests.support.s3_server import S3Server

pytestmark = pytest.mark.integration


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "file":
        yield open_store(f"file://{tmp_path / 'store'}")
    else:
        s3: S3Server = request.getfixturevalue("s3")
        yield open_store(s3.create_bucket())


def test_put_get_and_ranged_reads(store: Store, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4000
    src = tmp_path / "m.onnx"
    src.write_bytes(data)
    a = store.put_file(src, tiny_meta())
    assert a.artifact_id == hashlib.sha256(data).hexdigest() and a.size == len(data)
    assert store.exists(a.artifact_id) and store.size(a.artifact_id) == len(data)
    assert store.meta(a.artifact_id) == tiny_meta() and store.get(a.artifact_id) == a
    for offset in (0, 1, 777_777, len(data) - 1, len(data)):
        with store.open(a.artifact_id, offset) as f:
            assert f.read() == data[offset:]
    with store.open(a.artifact_id, 10) as f:  # what DownloadModel does: fixed-size reads
        parts = []
        while block := f.read(65536):
            parts.append(block)
    assert b"".join(parts) == data[10:]
    assert store.put_file(src, tiny_meta()) == a  # idempotent


def test_missing_and_malformed_ids_are_not_found(store: Store) -> None:
    for bad in ("ab" * 32, "../../etc/passwd", "A" * 64):
        assert not store.exists(bad)
        with pytest.raises(ArtifactNotFoundError):
            store.open(bad)
        with pytest.raises(ArtifactNotFoundError):
            store.size(bad)
        with pytest.raises(ArtifactNotFoundError):
            store.meta(bad)


def test_an_s3_url_names_what_is_wrong(s3: S3Server) -> None:
    with pytest.raises(ConfigError, match="bucket 'no-such-bucket' does not exist"):
        open_store(f"s3://no-such-bucket/x?endpoint_url={s3.endpoint}")
    with pytest.raises(ConfigError, match="unknown option"):
        open_store(f"s3://b/x?endpoint={s3.endpoint}")
    with pytest.raises(ConfigError, match="expected s3://bucket/prefix"):
        open_store("s3:///nobucket")


def test_download_from_s3_streams_without_holding_the_file(s3: S3Server, tmp_path: Path) -> None:
    """A 24 MiB artifact goes out over gRPC while the server side allocates well under its size."""
    store = open_store(s3.create_bucket())
    size = 24 << 20
    src = tmp_path / "big.onnx"
    with src.open("wb") as f:
        for i in range(size >> 20):
            f.write(hashlib.sha256(str(i).encode()).digest() * (1 << 15))
    a = store.put_file(src, tiny_meta())
    servicer = FleetServicer(store, None, BudgetPolicy({}), grpc_address="", chunk_size=256 << 10)
    server, port = create_server("127.0.0.1:0", servicer, 8)
    server.start()
    digest, got = hashlib.sha256(), 0
    tracemalloc.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            for chunk in pb_grpc.FleetServiceStub(ch).DownloadModel(
                pb.DownloadRequest(artifact_id=a.artifact_id), timeout=120
            ):
                digest.update(chunk.data)
                got += len(chunk.data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        server.stop(0)
    assert got == size and digest.hexdigest() == a.artifact_id
    # client and server share this process, so the peak counts both sides' buffers: a few chunks
    assert peak < size // 4, f"peak {peak / 2**20:.1f} MiB while streaming a {size >> 20} MiB artifact"


def _rot(store: Store, artifact_id: str) -> None:
    """Change an artifact's bytes in place, behind the store's back (bit rot, a bad disk or bucket)."""
    from edgecut.server.fleet.state.store import LocalStore
    from edgecut.server.fleet.state.store_s3 import S3Store

    if isinstance(store, LocalStore):
        path = store.root / artifact_id[:2] / f"{artifact_id}.onnx"
        path.write_bytes(b"rotten" + path.read_bytes()[6:])
    else:
        assert isinstance(store, S3Store)
        store.client.put_object(Bucket=store.bucket, Key=store._key(artifact_id, ".onnx"), Body=b"rotten")


def test_verify_quarantines_rotten_bytes_and_ids_lists_what_is_held(store: Store, tmp_path: Path) -> None:
    """What the scrub and the cache-hit check rely on, on every backend."""
    held = []
    for i in range(2):
        src = tmp_path / f"m{i}.onnx"
        src.write_bytes(bytes([i]) * 5000)
        held.append(store.put_file(src, tiny_meta()).artifact_id)
    assert store.ids() == sorted(held)
    good, bad = held
    assert store.verify(good) and store.verify(bad)
    _rot(store, bad)
    assert not store.verify(bad, force=True)  # a device reported bad bytes: hashed again, quarantined
    assert not store.exists(bad) and store.ids() == [good]
    assert store.verify(good, force=True) and store.exists(good)


def test_the_s3_test_server_keeps_answering_after_thousands_of_requests(s3: S3Server) -> None:
    """Its stderr was a pipe nobody read: after a few hundred requests moto blocked writing its request
    log, and every later S3 call in the session timed out (seen as ReadTimeoutError under load)."""
    from botocore.config import Config

    client = s3.client(Config(read_timeout=20, retries={"max_attempts": 1}))
    bucket = s3.create_bucket().split("/")[2]
    for _ in range(1500):  # each logs one line of ~100 bytes: about twice a pipe's 64 KiB
        client.head_bucket(Bucket=bucket)
