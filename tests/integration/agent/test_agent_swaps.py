"""The agent against a real broker and the real fleet gRPC server: task changes, refusals, commands."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from edgecut import topics
from edgecut.agent.serve import AgentClient
from edgecut.v1 import fleet_pb2
from tests.support.fleet_stub import FakeFleet
from tests.support.onnx_models import build_model, corrupted

pytestmark = pytest.mark.integration
IMG = np.random.default_rng(3).random((1, 3, 64, 64), dtype=np.float32)
SEG = build_model(["seg"], seed=1)
SEG_DEPTH = build_model(["seg", "depth"], seed=2)


def wait_until(pred: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)


@pytest.fixture
def fake_fleet(broker, fleet) -> Iterator[FakeFleet]:
    ff = FakeFleet(broker.port, fleet.address)
    for tasks, data in ((["seg"], SEG), (["seg", "depth"], SEG_DEPTH)):
        ff.register(tasks, fleet.put(data), len(data))
    yield ff
    ff.close()


def serving(agent) -> str:
    return agent.status().artifact_id


def test_task_change_at_run_time_swaps_in_a_new_model(make_agent, fake_fleet, fleet) -> None:
    agent = make_agent(tasks=["seg"], server_address=fleet.address)
    seg_id, _ = fake_fleet.by_tasks[("seg",)]
    both_id, _ = fake_fleet.by_tasks[("depth", "seg")]
    wait_until(lambda: serving(agent) == seg_id)
    with AgentClient(agent.api_address) as client:
        assert set(client.infer(IMG).outputs) == {"seg"}
        st = client.set_tasks(["seg", "depth"])  # the user's change through the local API
        assert list(st.tasks) == ["seg", "depth"]
        wait_until(lambda: serving(agent) == both_id)
        resp = client.infer(IMG)
        assert resp.artifact_id == both_id and set(resp.outputs) == {"seg", "depth"}
    assert fake_fleet.wait_for(lambda: any(r.artifact_id == both_id for r in fake_fleet.swaps))
    report = next(r for r in fake_fleet.swaps if r.artifact_id == both_id)
    assert report.ok and report.previous_artifact_id == seg_id and report.load_ms > 0
    seqs = [n.seq for n in fake_fleet.needs if list(n.tasks) == ["seg", "depth"]]
    assert seqs and seqs[0] == 1
    assert fake_fleet.needs[0].resources.cpu_count >= 1
    assert fake_fleet.wait_for(
        lambda: any(s.artifact_id == both_id and s.status == s.ONLINE for s in fake_fleet.states)
    )


def test_operator_commands_over_mqtt(make_agent, fake_fleet, fleet, broker) -> None:
    agent = make_agent(tasks=["seg", "depth"], server_address=fleet.address)
    seg_id, _ = fake_fleet.by_tasks[("seg",)]
    both_id, _ = fake_fleet.by_tasks[("depth", "seg")]
    wait_until(lambda: serving(agent) == both_id)
    op = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="operator")
    op.connect("127.0.0.1", broker.port)
    op.loop_start()
    try:
        topic = topics.device_topic(agent.device_id, topics.COMMAND)
        cmd = fleet_pb2.Command(device_id=agent.device_id, set_tasks=fleet_pb2.SetTasks(tasks=["seg"]))
        op.publish(topic, cmd.SerializeToString(), qos=1).wait_for_publish(5)
        wait_until(lambda: serving(agent) == seg_id)
        assert agent.tasks.tasks == ["seg"]
        cmd = fleet_pb2.Command(device_id=agent.device_id, rollback=fleet_pb2.Rollback())
        op.publish(topic, cmd.SerializeToString(), qos=1).wait_for_publish(5)
        wait_until(lambda: serving(agent) == both_id)
        op.publish(topic, b"\xff\x00 not protobuf", qos=1).wait_for_publish(5)  # logged, ignored
        with AgentClient(agent.api_address) as client:
            assert client.infer(IMG).artifact_id == both_id
    finally:
        op.disconnect()
        op.loop_stop()


def test_corrupted_artifact_is_refused_and_old_model_keeps_serving(make_agent, fake_fleet, fleet) -> None:
    agent = make_agent(tasks=["seg"], server_address=fleet.address)
    seg_id, _ = fake_fleet.by_tasks[("seg",)]
    wait_until(lambda: serving(agent) == seg_id)
    both_id, _ = fake_fleet.by_tasks[("depth", "seg")]
    raw = bytearray(fleet.file(both_id).read_bytes())
    raw[100] ^= 0x40  # the served bytes no longer hash to the artifact id
    fleet.file(both_id).write_bytes(bytes(raw))
    agent.set_tasks(["seg", "depth"])
    assert fake_fleet.wait_for(lambda: any(r.artifact_id == both_id for r in fake_fleet.swaps))
    report = next(r for r in fake_fleet.swaps if r.artifact_id == both_id)
    assert not report.ok and "hashes to" in report.reason
    assert serving(agent) == seg_id
    assert not agent.store.has(both_id)
    with AgentClient(agent.api_address) as client:
        assert client.infer(IMG).artifact_id == seg_id
        assert "refused" in client.status().last_error


@pytest.mark.parametrize("fault", ["unloadable", "nan"])
def test_model_that_fails_to_load_is_rolled_back_and_not_retried(
    make_agent, fake_fleet, fleet, fault
) -> None:
    agent = make_agent(tasks=["seg"], server_address=fleet.address)
    seg_id, _ = fake_fleet.by_tasks[("seg",)]
    wait_until(lambda: serving(agent) == seg_id)
    good = build_model(["seg", "depth"], seed=5)
    data = corrupted(good) if fault == "unloadable" else build_model(["seg", "depth"], fault="nan")
    bad_id = fleet.put_raw(data, meta_from=good)
    fake_fleet.register(["seg", "depth"], bad_id, len(data))
    with AgentClient(agent.api_address) as client:
        client.set_tasks(["seg", "depth"])
        assert fake_fleet.wait_for(lambda: any(r.artifact_id == bad_id for r in fake_fleet.swaps))
        report = next(r for r in fake_fleet.swaps if r.artifact_id == bad_id)
        assert not report.ok and report.previous_artifact_id == seg_id
        assert ("cannot load" if fault == "unloadable" else "not finite") in report.reason
        st = client.status()
        assert st.artifact_id == seg_id and st.failed_swaps == 1
        assert client.infer(IMG).artifact_id == seg_id
    assert bad_id in agent.store.bad
    fake_fleet.announce(agent.device_id, ["seg", "depth"])  # the same model again: not retried
    time.sleep(1.0)
    assert sum(r.artifact_id == bad_id for r in fake_fleet.swaps) == 1
    assert agent.status().failed_swaps == 1
