"""The agent against a real broker and the real fleet server: task changes, refusals, commands.

Every model comes from the server's own build (the ONNX test engine), store and DownloadModel;
what the agent reports is read back from the server's registry.
"""

from __future__ import annotations

import time

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from edgecut import topics
from edgecut.agent.serve import AgentClient
from edgecut.v1 import fleet_pb2
from tests.support.agent_helpers import serving, wait_serving, wait_until
from tests.support.fleet_server import Device

pytestmark = pytest.mark.integration
IMG = np.random.default_rng(3).random((1, 3, 64, 64), dtype=np.float32)


def test_task_change_at_run_time_swaps_in_a_new_model(make_agent, fleet) -> None:
    agent = make_agent(tasks=["seg"])
    dev = agent.device_id
    seg_id = wait_serving(agent, ["seg"])
    with AgentClient(agent.api_address) as client:
        assert set(client.infer(IMG).outputs) == {"seg"}
        st = client.set_tasks(["seg", "depth"])  # the user's change through the local API
        assert list(st.tasks) == ["seg", "depth"]
        both_id = wait_serving(agent, ["seg", "depth"])
        resp = client.infer(IMG)
        assert resp.artifact_id == both_id and set(resp.outputs) == {"seg", "depth"}
    assert both_id != seg_id and fleet.store.exists(seg_id) and fleet.store.exists(both_id)
    report = wait_until(lambda: next((r for r in fleet.swaps(dev) if r["artifact_id"] == both_id), None))
    assert report["ok"] and report["previous_artifact_id"] == seg_id and report["load_ms"] > 0
    rec = fleet.device(dev)  # the server's record of the device's latest needs
    assert rec["needs_tasks"] == ["seg", "depth"] and rec["needs_seq"] == 1
    assert rec["resources"]["cpu_count"] >= 1 and rec["offered_artifact_id"] == both_id
    wait_until(
        lambda: (
            (d := fleet.device(dev))["status"] == "online"
            and d["artifact_id"] == both_id
            and sorted(d["serving_tasks"]) == ["depth", "seg"]
        )  # only a DeviceState sets serving_tasks
    )


def test_operator_commands_over_mqtt(make_agent, fleet, broker) -> None:
    agent = make_agent(tasks=["seg", "depth"])
    both_id = wait_serving(agent, ["seg", "depth"])
    op = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="operator")
    op.connect("127.0.0.1", broker.port)
    op.loop_start()
    try:
        topic = topics.device_topic(agent.device_id, topics.COMMAND)
        cmd = fleet_pb2.Command(device_id=agent.device_id, set_tasks=fleet_pb2.SetTasks(tasks=["seg"]))
        op.publish(topic, cmd.SerializeToString(), qos=1).wait_for_publish(5)
        seg_id = wait_serving(agent, ["seg"])
        assert seg_id != both_id and fleet.device(agent.device_id)["offered_artifact_id"] == seg_id
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


def test_corrupted_artifact_is_refused_and_old_model_keeps_serving(make_agent, fleet) -> None:
    agent = make_agent(tasks=["seg"])
    seg_id = wait_serving(agent, ["seg"])
    both_id = fleet.prebuild(agent, ["seg", "depth"]).artifact_id
    raw = bytearray(fleet.file(both_id).read_bytes())
    raw[100] ^= 0x40  # bit rot in the server's store: the served bytes no longer hash to the id
    fleet.file(both_id).write_bytes(bytes(raw))
    agent.set_tasks(["seg", "depth"])  # the server answers from its store with that artifact
    report = wait_until(
        lambda: next((r for r in fleet.swaps(agent.device_id) if r["artifact_id"] == both_id), None)
    )
    assert not report["ok"] and "hashes to" in report["reason"]
    assert serving(agent) == seg_id
    assert not agent.store.has(both_id)
    with AgentClient(agent.api_address) as client:
        assert client.infer(IMG).artifact_id == seg_id
        assert "refused" in client.status().last_error


@pytest.mark.parametrize("fault", ["unloadable", "nan"])
def test_model_that_fails_to_load_is_rolled_back_and_not_retried(make_agent, fleet, broker, fault) -> None:
    agent = make_agent(tasks=["seg"])
    dev = agent.device_id
    seg_id = wait_serving(agent, ["seg"])
    fleet.engine.faults[("depth", "seg")] = fault  # the server's next seg+depth build comes out broken
    with AgentClient(agent.api_address) as client:
        client.set_tasks(["seg", "depth"])
        report = wait_until(lambda: next((r for r in fleet.swaps(dev) if r["artifact_id"] != seg_id), None))
        bad_id = report["artifact_id"]
        assert bad_id == fleet.device(dev)["offered_artifact_id"] and fleet.store.exists(bad_id)
        assert not report["ok"] and report["previous_artifact_id"] == seg_id
        assert ("cannot load" if fault == "unloadable" else "not finite") in report["reason"]
        st = client.status()
        assert st.artifact_id == seg_id and st.failed_swaps == 1
        assert client.infer(IMG).artifact_id == seg_id
    assert bad_id in agent.store.bad
    watch = Device(broker.url, dev)  # listens on the agent's model topic
    try:
        first, retained = watch.next(topics.MODEL)
        assert retained and fleet_pb2.ModelReady.FromString(first).artifact_id == bad_id
        agent.link.publish_needs()  # the agent asks again (as after every reconnect) ...
        again = watch.model_ready()
        assert again.artifact_id == bad_id and again.cache_hit  # ... and is offered the same model
    finally:
        watch.close()
    time.sleep(1.0)  # not retried
    assert sum(r["artifact_id"] == bad_id for r in fleet.swaps(dev)) == 1
    assert agent.status().failed_swaps == 1
