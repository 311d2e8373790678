"""Downloads from the real fleet server's DownloadModel; the faults it cannot make on cue use a minimal servicer."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecut.agent.artifacts import ModelStore
from edgecut.agent.errors import ChecksumError, DiskSpaceError, FetchError
from edgecut.agent.fetch import Downloader
from tests.support.download_faults import DownloadServicer, start_download_server
from tests.support.onnx_models import artifact_id, build_model

pytestmark = pytest.mark.integration
DATA = build_model(["seg", "depth", "count"], width=32)  # ~10 KB: several 8 KB chunks


def test_download_from_the_fleet_server(fleet, tmp_path: Path) -> None:
    aid = fleet.put(DATA)
    store = ModelStore(tmp_path / "agent")
    path = Downloader(fleet.address, "d1").fetch(store, aid, aid, len(DATA))
    assert path == store.path(aid) and path.read_bytes() == DATA
    assert not store.part_path(aid).exists()


def test_resume_from_a_part_file_left_by_a_previous_run(fleet, tmp_path: Path) -> None:
    aid = fleet.put(DATA)
    store = ModelStore(tmp_path / "agent")
    store.part_path(aid).write_bytes(DATA[:5000])  # the agent died after 5000 bytes
    dl = Downloader(fleet.address, "d1")
    assert dl.fetch(store, aid, aid, len(DATA)).read_bytes() == DATA
    assert dl.resumes == 1


def test_resume_after_the_stream_drops(tmp_path: Path) -> None:
    # A dedicated servicer: the real server cannot be made to drop a stream at an exact byte, nor
    # does it record the offset each call asked for.
    servicer = DownloadServicer(chunk_size=1000)
    aid = servicer.add(DATA)
    servicer.drop_after = 3000
    server, address = start_download_server(servicer)
    try:
        store = ModelStore(tmp_path)
        path = Downloader(address, "d1", backoff_s=0.05).fetch(store, aid, aid, len(DATA))
    finally:
        server.stop(0)
    assert path.read_bytes() == DATA
    assert servicer.requests == [(aid, 0), (aid, 3000)]  # the second call starts where the first broke


def test_corrupted_artifact_is_refused_and_removed(fleet, tmp_path: Path) -> None:
    aid = fleet.put(DATA)
    raw = bytearray(fleet.file(aid).read_bytes())
    raw[len(raw) // 2] ^= 0x01  # bit rot in the server's store
    fleet.file(aid).write_bytes(bytes(raw))
    store = ModelStore(tmp_path)
    with pytest.raises(ChecksumError, match="refused"):
        Downloader(fleet.address, "d1").fetch(store, aid, aid, len(DATA))
    assert not store.has(aid) and not store.part_path(aid).exists()


def test_server_offering_other_bytes_is_refused(tmp_path: Path) -> None:
    # A dedicated servicer: the real server always announces the artifact id as the sha256.
    servicer = DownloadServicer()
    aid = servicer.add(DATA)
    servicer.lie_sha = "0" * 64
    server, address = start_download_server(servicer)
    try:
        with pytest.raises(ChecksumError):
            Downloader(address, "d1").fetch(ModelStore(tmp_path), aid, aid, len(DATA))
    finally:
        server.stop(0)


def test_unknown_artifact_and_full_disk(fleet, tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    missing = artifact_id(b"nothing")
    with pytest.raises(FetchError, match="NOT_FOUND"):
        Downloader(fleet.address, "d1").fetch(store, missing, missing, 10)
    with pytest.raises(DiskSpaceError, match="MB free"):
        Downloader(fleet.address, "d1").fetch(store, missing, missing, 1 << 60)
    with pytest.raises(FetchError, match="refusing artifact id"):
        Downloader(fleet.address, "d1").fetch(store, "../../etc/passwd", "", 10)


def test_unreachable_server_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    from edgecut.broker import free_port

    aid = artifact_id(DATA)
    dl = Downloader(f"127.0.0.1:{free_port()}", "d1", max_attempts=2, backoff_s=0.01, call_timeout_s=2)
    with pytest.raises(FetchError, match="failed 2 times"):
        dl.fetch(ModelStore(tmp_path), aid, aid, len(DATA))
