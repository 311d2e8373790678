"""The agent against a real broker and the real fleet server: task changes, refusals, commands.

Every model comes from the server's own build (the ONNX test engine), store and DownloadModel;
what the agent reports is read back from the server's registry.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from edgecut import topics
from edgecut.agent.serve import AgentClient
from edgecut.v1 import fleet_pb2
from tests.support.agent_helpers import serving, wait_serving, wait_until
from tests.support.fleet_server import Device
from tests.support.keys import fleet_key, signed_command

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
    # verified provenance, on the device and in the server's record
    prov = json.loads(agent.status().provenance_json)
    assert prov["verified_key_id"] == fleet_key().key_id and prov["artifact_id"] == both_id
    assert prov["device_id"] == dev and prov["tasks"] == ["depth", "seg"] and prov["base_model"]
    record = wait_until(
        lambda: fleet.device(dev)["provenance"].get("manifest", {}).get("artifact_id") == both_id
    )
    assert record and fleet.device(dev)["provenance"]["verified_key_id"] == fleet_key().key_id
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
        cmd = signed_command(agent.device_id, set_tasks=fleet_pb2.SetTasks(tasks=["seg"]))
        op.publish(topic, cmd, qos=1).wait_for_publish(5)
        seg_id = wait_serving(agent, ["seg"])
        assert seg_id != both_id and fleet.device(agent.device_id)["offered_artifact_id"] == seg_id
        assert agent.tasks.tasks == ["seg"]
        cmd = signed_command(agent.device_id, rollback=fleet_pb2.Rollback())
        op.publish(topic, cmd, qos=1).wait_for_publish(5)
        wait_until(lambda: serving(agent) == both_id)
        # acknowledged on the device's ack topic; the server keeps the latest one
        wait_until(lambda: fleet.device(agent.device_id)["last_command"].get("action") == "rollback")
        assert fleet.device(agent.device_id)["last_command"]["ok"] is True
        op.publish(topic, b"\xff\x00 not protobuf", qos=1).wait_for_publish(5)  # logged, ignored
        with AgentClient(agent.api_address) as client:
            assert client.infer(IMG).artifact_id == both_id
    finally:
        op.disconnect()
        op.loop_stop()


def _rot(path, keep_mtime: bool = True) -> None:
    """Flip one bit in place, as bit rot does: same size and, by default, the same mtime."""
    st = path.stat()
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0x40
    path.write_bytes(bytes(raw))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_corrupt_artifact_in_the_store_is_rebuilt_not_offered(make_agent, fleet) -> None:
    """Fault 6: a cache hit whose bytes rotted was offered forever; now it is quarantined and built again."""
    agent = make_agent(tasks=["seg"])
    seg_id = wait_serving(agent, ["seg"])
    both_id = fleet.prebuild(agent, ["seg", "depth"]).artifact_id
    builds = len(fleet.engine.builds)
    _rot(fleet.file(both_id))
    agent.set_tasks(["seg", "depth"])
    assert wait_serving(agent, ["seg", "depth"]) == both_id  # the rebuilt artifact (deterministic engine)
    assert len(fleet.engine.builds) == builds + 1
    assert list((fleet.store.root / "quarantine").iterdir())
    assert not any(r["artifact_id"] == both_id and not r["ok"] for r in fleet.swaps(agent.device_id))
    assert seg_id != both_id
    wait_until(lambda: agent.status().last_error == "")  # cleared right after the swap


def test_artifact_that_rots_after_its_offer_is_refused_then_rebuilt(make_agent, fleet) -> None:
    """The device refuses the bad bytes (old model keeps serving) and its report makes the server rebuild."""
    agent = make_agent(tasks=["seg"])
    seg_id = wait_serving(agent, ["seg"])
    both_id = fleet.prebuild(agent, ["seg", "depth"]).artifact_id
    assert fleet.store.verify(both_id)  # as at a cache hit: the server hashed it and remembers it is good
    _rot(fleet.file(both_id))  # rots after that check
    with fleet.engine.hold():  # keep the rebuild from finishing until the refusal has been seen
        agent.set_tasks(["seg", "depth"])
        report = wait_until(
            lambda: next((r for r in fleet.swaps(agent.device_id) if r["artifact_id"] == both_id), None)
        )
        assert not report["ok"] and "hashes to" in report["reason"]
        assert serving(agent) == seg_id and not agent.store.has(both_id)
        with AgentClient(agent.api_address) as client:
            assert client.infer(IMG).artifact_id == seg_id
            assert "refused" in client.status().last_error
    assert wait_serving(agent, ["seg", "depth"]) == both_id
    wait_until(lambda: agent.status().last_error == "")  # cleared by the successful swap (fault 7)


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
