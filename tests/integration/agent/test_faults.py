"""Faults end in a retry or a clear error, never a stuck agent (issue 15, faults 4, 5, 7 and 9).

Each test here failed on the code before the fix: a download that gave up was never tried again;
a full disk escaped as a bare traceback with no report; a rollback was undone by the next offer;
`last_error` stayed after a successful swap; Infer ran any batch it was sent.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

import edgecut.agent.agent as agent_module
from edgecut.agent.fetch import Downloader
from edgecut.agent.serve import AgentClient
from edgecut.errors import EdgecutError
from edgecut.v1 import agent_pb2, agent_pb2_grpc
from tests.support.agent_helpers import serving, wait_serving, wait_until
from tests.support.download_faults import DownloadServicer, start_download_server
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import WAIT_S

pytestmark = pytest.mark.integration
IMG = np.random.default_rng(5).random((1, 3, 64, 64), dtype=np.float32)


def _refused(fleet, agent, artifact_id: str | None = None) -> list[dict]:
    return [
        r
        for r in fleet.swaps(agent.device_id)
        if not r["ok"] and (artifact_id is None or r["artifact_id"] == artifact_id)
    ]


@pytest.fixture
def quick_give_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's downloads give up after the same 4 attempts, 50 ms apart instead of 1 + 2 + 4 s."""
    monkeypatch.setattr(agent_module, "Downloader", functools.partial(Downloader, backoff_s=0.05))


def test_download_that_gave_up_is_tried_again_when_the_server_is_back(
    make_agent, fleet, quick_give_up
) -> None:
    """Fault 4: the old agent gave up after its attempts and kept the old model for good."""
    proxy = TcpProxy(fleet.server.grpc_port).start()
    try:
        agent = make_agent(tasks=["seg"], server_address=f"127.0.0.1:{proxy.port}")
        seg_id = wait_serving(agent, ["seg"])
        proxy.cut()
        agent.set_tasks(["seg", "depth"])
        report = wait_until(lambda: next(iter(_refused(fleet, agent)), None))
        assert "failed" in report["reason"] and serving(agent) == seg_id
        assert "failed" in agent.status().last_error
        proxy.restore()  # the server is reachable again, long after the download gave up
        both_id = wait_serving(agent, ["seg", "depth"])
        assert both_id != seg_id
        wait_until(lambda: agent.status().last_error == "")
    finally:
        proxy.cut()


def test_a_waiting_retry_runs_at_once_when_the_broker_link_comes_back(
    make_agent, fleet, broker, monkeypatch, quick_give_up
) -> None:
    monkeypatch.setattr(agent_module, "FIRST_RETRY_S", 3600.0)  # the backoff alone would wait an hour
    proxy = TcpProxy(fleet.server.grpc_port).start()
    try:
        agent = make_agent(tasks=["seg"], server_address=f"127.0.0.1:{proxy.port}")
        wait_serving(agent, ["seg"])
        proxy.cut()
        agent.set_tasks(["seg", "depth"])
        wait_until(lambda: _refused(fleet, agent))
        wait_until(lambda: agent._retry.pending)
        proxy.restore()
        broker.stop()  # the network comes back: the broker link reconnects ...
        wait_until(lambda: not agent.link.connected)
        broker.start()
        wait_serving(agent, ["seg", "depth"])  # ... and the download is tried at once
    finally:
        proxy.cut()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs: a disk that really fills up (ENOSPC), as on a small device."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path: Path) -> None:
    """Write until the file system is full."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass


def test_disk_full_during_a_download_is_reported_cleaned_and_retried(make_agent, fleet, small_disk) -> None:
    """Fault 5: the OSError escaped as a bare traceback: no SwapReport, no last_error, the .part stayed."""
    fleet.engine.pad_bytes = 2 << 20  # a 2 MiB artifact, served in 4 KiB chunks
    servicer = DownloadServicer(chunk_size=4096)
    server, address = start_download_server(servicer)
    filler = small_disk / "filler"
    try:
        agent = make_agent(tasks=["seg"], state_dir=small_disk / "agent", server_address=address)
        offer = fleet.prebuild(agent, ["seg"])
        servicer.add(fleet.file(offer.artifact_id).read_bytes())
        seg_id = wait_serving(agent, ["seg"])
        offer = fleet.prebuild(agent, ["seg", "depth"])
        both_id = offer.artifact_id
        servicer.add(fleet.file(both_id).read_bytes())
        # another program fills the disk once the download has begun
        servicer.on_chunk = lambda off: _fill(filler) if off == 8192 else None
        agent.set_tasks(["seg", "depth"])
        report = wait_until(lambda: next(iter(_refused(fleet, agent, both_id)), None))
        assert "disk full" in report["reason"], (report, seg_id, both_id, servicer.requests)
        assert "disk full" in agent.status().last_error
        assert serving(agent) == seg_id and not agent.store.part_path(both_id).exists()
        with AgentClient(agent.api_address) as client:
            assert client.infer(IMG).artifact_id == seg_id
        servicer.on_chunk = None
        filler.unlink()  # space is back: the next retry succeeds
        assert wait_serving(agent, ["seg", "depth"]) == both_id
        wait_until(lambda: agent.status().last_error == "")
    finally:
        server.stop(0)
        filler.unlink(missing_ok=True)


def test_rollback_is_a_pin_that_survives_a_restart_until_lifted(make_agent, fleet) -> None:
    """Fault 7: the retained offer undid an operator's rollback within seconds of a restart."""
    agent = make_agent(tasks=["seg"])
    seg_id = wait_serving(agent, ["seg"])
    agent.set_tasks(["seg", "depth"])
    both_id = wait_serving(agent, ["seg", "depth"])
    with AgentClient(agent.api_address) as client:
        st = client.rollback()
    assert st.artifact_id == both_id or st.artifact_id == seg_id
    assert serving(agent) == seg_id and agent.status().pinned_artifact_id == seg_id
    agent.stop()
    again = make_agent(device_id=agent.device_id, state_dir=agent.settings.state_dir)
    assert serving(again) == seg_id and again.status().pinned_artifact_id == seg_id
    wait_until(lambda: again._latest_ready is not None)  # the retained offer of seg+depth arrived ...
    again.link.publish_needs()  # ... and is answered again
    wait_until(lambda: fleet.device(again.device_id)["pinned_artifact_id"] == seg_id)
    assert serving(again) == seg_id  # the pin holds
    with AgentClient(again.api_address) as client:
        assert client.unpin().pinned_artifact_id == ""
    assert wait_serving(again, ["seg", "depth"]) == both_id


def test_last_error_clears_on_the_next_successful_swap(make_agent, fleet) -> None:
    agent = make_agent(tasks=["seg"])
    wait_serving(agent, ["seg"])
    fleet.engine.faults[("depth", "seg")] = "nan"
    agent.set_tasks(["seg", "depth"])
    wait_until(lambda: "not finite" in agent.status().last_error)
    agent.set_tasks(["count"])
    wait_serving(agent, ["count"])
    wait_until(lambda: agent.status().last_error == "")


def test_local_api_bounds_and_garbage(make_agent, fleet) -> None:
    """Faults 8 and 9: huge shapes, huge batches and bytes that are no request get INVALID_ARGUMENT."""
    agent = make_agent(tasks=["seg"], infer_max_batch=4)
    wait_serving(agent, ["seg"])
    with grpc.insecure_channel(agent.api_address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        big = agent_pb2.Tensor(shape=[1, 2**32, 2**32], data=b"\0" * 16)
        wide = agent_pb2.Tensor(shape=[5, 3, 64, 64], data=np.zeros((5, 3, 64, 64), "<f4").tobytes())
        huge = agent_pb2.Tensor(shape=[800, 3, 64, 64], data=b"\0" * (800 * 3 * 64 * 64 * 4))  # 39 MB
        for tensor, why in ((big, "needs"), (wide, "infer_max_batch"), (huge, "infer_max_bytes")):
            with pytest.raises(grpc.RpcError) as info:
                stub.Infer(agent_pb2.InferRequest(image=tensor), timeout=WAIT_S)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and why in info.value.details()
        for method in ("Infer", "Status", "SetTasks", "Rollback", "Unpin"):
            call = channel.unary_unary(f"/edgecut.v1.AgentService/{method}")
            with pytest.raises(grpc.RpcError) as info:
                call(b"\xff\xff\xff garbage", timeout=WAIT_S)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
    assert agent.status().inference_count == 0  # nothing ran
    with AgentClient(agent.api_address) as client:
        assert client.infer(IMG).artifact_id == serving(agent)
    with pytest.raises(EdgecutError):
        agent.tasks.set(["x" * 100])
