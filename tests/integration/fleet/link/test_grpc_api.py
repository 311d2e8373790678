"""FleetService over a real gRPC server on 127.0.0.1 (no MQTT): progress streams, single flight, downloads."""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgecut.server.fleet.app import FleetServer
from edgecut.server.fleet.state.schema import DONE
from edgecut.v1 import fleet_pb2 as pb
from tests.support.fleet_server import download, sha256, start_server, stub
from tests.support.onnx_engine import OnnxTestEngine

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(tmp_path: Path) -> OnnxTestEngine:
    return OnnxTestEngine(tmp_path / "work", delay=0.6, pad_bytes=300_000, fail_tasks={"normals"})


@pytest.fixture
def server(tmp_path: Path, engine: OnnxTestEngine) -> Iterator[FleetServer]:
    s = start_server(tmp_path / "state", engine, chunk_size=16 * 1024)
    yield s
    s.stop()


@pytest.fixture
def fleet(server: FleetServer) -> Iterator:
    channel, s = stub(server.grpc_address)
    yield s
    channel.close()


def request(tasks: list[str], **kw) -> pb.ModelRequest:
    return pb.ModelRequest(device_id="d1", tasks=tasks, resources=pb.Resources(device_class="x86"), **kw)


def test_request_model_streams_progress_until_ready(server: FleetServer, fleet) -> None:
    stream = list(fleet.RequestModel(request(["seg", "depth"]), timeout=20))
    stages = [pb.JobProgress.Stage.Name(p.stage) for p in stream]
    assert stages[0] == "QUEUED" and stages[-1] == "READY"
    assert sorted(
        set(stages) - {"QUEUED", "READY"}, key=["IMPORTANCE", "PRUNING", "RECOVERY", "EXPORTING"].index
    ) == ["IMPORTANCE", "PRUNING", "RECOVERY", "EXPORTING"]
    ready = stream[-1].ready
    assert ready.tasks == ["depth", "seg"] and ready.device_id == "d1" and not ready.cache_hit
    assert ready.grpc_address == server.grpc_address and ready.sha256 == ready.artifact_id
    assert ready.size_bytes > 300_000 and ready.macs > 0 and ready.build_key == stream[0].build_key
    data = download(fleet, ready.artifact_id)
    assert len(data) == ready.size_bytes and sha256(data) == ready.sha256
    again = list(fleet.RequestModel(request(["depth", "seg"]), timeout=5))
    assert len(again) == 1 and again[0].ready.cache_hit and again[0].ready.artifact_id == ready.artifact_id


def test_fifty_concurrent_requests_for_three_needs_run_exactly_three_jobs(
    server: FleetServer, engine: OnnxTestEngine, fleet
) -> None:
    needs = [["seg", "depth"], ["edges"], ["count", "seg", "edges"]]
    rng = random.Random(4)
    reqs = []
    for i in range(50):
        tasks = list(needs[i % 3])
        rng.shuffle(tasks)  # same needs in any order and a budget in the same bucket share one build
        reqs.append(
            pb.ModelRequest(
                device_id=f"dev-{i}",
                tasks=tasks,
                budget=pb.Budget(macs_fraction=0.5 + rng.uniform(-0.02, 0.02)),
            )
        )

    def call(r: pb.ModelRequest) -> pb.JobProgress:
        return list(fleet.RequestModel(r, timeout=30))[-1]

    with ThreadPoolExecutor(50) as pool:
        finals = list(pool.map(call, reqs))
    assert all(f.stage == pb.JobProgress.READY for f in finals)
    assert len(engine.builds) == 3
    assert server.registry is not None
    assert [j.state for j in server.registry.jobs.all()] == [DONE] * 3
    by_needs: dict[tuple[str, ...], set[str]] = {tuple(sorted(r.tasks)): set() for r in reqs}
    for r, f in zip(reqs, finals, strict=True):
        by_needs[tuple(sorted(r.tasks))].add(f.ready.artifact_id)
        assert f.ready.device_id == r.device_id
    assert all(len(ids) == 1 for ids in by_needs.values()) and len(set().union(*by_needs.values())) == 3


def test_download_interrupted_at_40_percent_resumes_and_matches_sha256(fleet) -> None:
    ready = list(fleet.RequestModel(request(["edges"]), timeout=20))[-1].ready
    cut = int(ready.size_bytes * 0.4)
    first = download(fleet, ready.artifact_id, stop_at=cut)
    assert cut <= len(first) < ready.size_bytes  # the stream was cut part-way
    channel, fresh = stub(ready.grpc_address)  # a new connection, as after a network drop
    try:
        rest = download(fresh, ready.artifact_id, offset=len(first))
    finally:
        channel.close()
    assert len(first) + len(rest) == ready.size_bytes
    assert sha256(first + rest) == ready.sha256 == ready.artifact_id
    assert download(fleet, ready.artifact_id, offset=ready.size_bytes) == b""


def _fail(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        list(call())
    return info.value


def _code_md(err: grpc.RpcError) -> str:
    return dict(err.trailing_metadata() or ()).get("edgecut-error-code", "")


def test_bad_downloads_get_clear_statuses(fleet) -> None:
    err = _fail(lambda: fleet.DownloadModel(pb.DownloadRequest(artifact_id="../../etc/passwd"), timeout=5))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "not a sha256" in err.details()
    assert _code_md(err) == "NOT_FOUND"
    err = _fail(lambda: fleet.DownloadModel(pb.DownloadRequest(artifact_id="ab" * 32), timeout=5))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "not in the store" in err.details()
    ready = list(fleet.RequestModel(request(["depth"]), timeout=20))[-1].ready
    err = _fail(
        lambda: fleet.DownloadModel(
            pb.DownloadRequest(artifact_id=ready.artifact_id, offset=ready.size_bytes + 1), timeout=5
        )
    )
    assert err.code() == grpc.StatusCode.OUT_OF_RANGE and "past the end" in err.details()


def test_bad_requests_fail_fast_and_the_server_keeps_serving(server: FleetServer, fleet) -> None:
    err = _fail(lambda: fleet.RequestModel(request(["seg", "sky"]), timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and _code_md(err) == "UNKNOWN_TASK"
    assert err.details() == "unknown task 'sky': this model knows seg, depth, normals, edges, count"
    err = _fail(lambda: fleet.RequestModel(request([" "]), timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and _code_md(err) == "EMPTY_TASKS"
    err = _fail(lambda: fleet.RequestModel(request(["seg"], budget=pb.Budget(macs_fraction=1.7)), timeout=5))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and _code_md(err) == "IMPOSSIBLE_BUDGET"
    assert "macs_fraction=1.7" in err.details()
    err = _fail(lambda: fleet.RequestModel(request(["seg"], budget=pb.Budget(max_macs=100)), timeout=5))
    assert _code_md(err) == "IMPOSSIBLE_BUDGET" and "below the smallest model" in err.details()
    # a request larger than the deliberate 64 KiB limit is refused by gRPC itself
    err = _fail(lambda: fleet.RequestModel(request(["x" * 70_000]), timeout=5))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert server.registry is not None and server.registry.jobs.all() == []
    assert list(fleet.RequestModel(request(["count"]), timeout=20))[-1].stage == pb.JobProgress.READY


def test_a_failed_build_ends_the_stream_with_an_error(fleet) -> None:
    last = list(fleet.RequestModel(request(["normals", "seg"]), timeout=20))[-1]
    assert last.stage == pb.JobProgress.FAILED
    assert last.error.code == pb.Error.BUILD_FAILED and "recovery diverged for normals" in last.error.message


def test_health_service_reports_serving(server: FleetServer) -> None:
    with grpc.insecure_channel(server.grpc_address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", "edgecut.v1.FleetService"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
