"""Operator commands through the dashboard's API to real agents: each lands, and a restart replays none."""

from __future__ import annotations

import queue

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgecut import topics
from edgecut.server.fleet.events import FleetEvent
from tests.support.live_fleet import LiveFleet
from tests.support.waiting import WAIT_S, wait_until

pytestmark = pytest.mark.integration


def test_set_tasks_pin_rollback_and_unpin_land_on_the_device(live: LiveFleet) -> None:
    agent = live.agent("dev-a", ["seg"])
    seg = live.wait_serving("dev-a", ["seg"])

    c = live.command("dev-a", "set_tasks", tasks=["seg", "depth"])
    assert c["state"] == "ok", c
    seg_depth = live.wait_serving("dev-a", ["seg", "depth"])
    assert agent.tasks.tasks == ["seg", "depth"] and seg_depth != seg

    assert live.command("dev-a", "pin")["state"] == "ok"
    assert agent.status().pinned_artifact_id == seg_depth
    wait_until(lambda: live.registry.devices.get("dev-a")["pinned_artifact_id"] == seg_depth)

    c = live.command("dev-a", "rollback")  # the previous model, pinned
    assert c["state"] == "ok", c
    assert live.serving("dev-a") == seg and agent.status().pinned_artifact_id == seg

    assert live.command("dev-a", "unpin")["state"] == "ok"  # the fleet's offer applies again
    wait_until(lambda: live.serving("dev-a") == seg_depth)

    once = live.command("dev-a", "set_tasks", tasks=["normals", "normals"])  # the desk drops the duplicate
    assert (
        once["state"] == "ok" and once["args"] == {"tasks": ["normals"]} and agent.tasks.tasks == ["normals"]
    )
    audit = live.api("/api/v1/audit?device_id=dev-a")["audit"]
    assert [a["event"] for a in audit[::-1]] == ["sent", "ok"] * 5
    assert {a["who"] for a in audit} == {"local"}


def retained_commands(broker_url: str, device_id: str) -> list[bytes]:
    """What the broker would hand a fresh subscriber of the device's command topic at once (retained)."""
    host, port = broker_url.removeprefix("mqtt://").rsplit(":", 1)
    got: queue.Queue[tuple[str, bytes]] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-retained-probe")
    client.on_message = lambda _c, _u, m: got.put((m.topic, bytes(m.payload)))
    subscribed = queue.Queue[bool]()
    client.on_subscribe = lambda *_a: subscribed.put(True)
    client.connect(host, int(port))
    client.loop_start()
    marker = "edgecut-test/marker"
    try:
        client.subscribe([(topics.device_topic(device_id, topics.COMMAND), 1), (marker, 1)])
        subscribed.get(timeout=WAIT_S)
        # retained messages are sent on subscribing, before anything published after it
        client.publish(marker, b"end", qos=1).wait_for_publish(WAIT_S)
        seen = []
        while True:
            topic, payload = got.get(timeout=WAIT_S)
            if topic == marker:
                return seen
            seen.append(payload)
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_restart_of_server_and_agent_replays_no_command(live: LiveFleet) -> None:
    agent = live.agent("dev-r", ["seg"])
    live.wait_serving("dev-r", ["seg"])
    sent = [
        live.command("dev-r", "set_tasks", tasks=["seg", "depth"]),
        live.command("dev-r", "pin"),
        live.command("dev-r", "unpin"),
    ]
    assert [c["state"] for c in sent] == ["ok", "ok", "ok"]
    live.wait_serving("dev-r", ["seg", "depth"])
    agent.set_tasks(["depth"])  # the user changes the tasks on the device afterwards
    live.wait_serving("dev-r", ["depth"])

    live.restart_server()
    acks: list[FleetEvent] = []
    live.server.observers.add(lambda e: acks.append(e) if e.kind == "ack" else None)
    agent = live.restart_agent("dev-r")
    live.wait_serving("dev-r", ["depth"])
    assert retained_commands(live.broker_url, "dev-r") == []  # nothing on the topic to replay

    # acks come back in order: by the time this fresh command's ack lands, a replay would have too
    fresh = live.command("dev-r", "pin")
    assert fresh["state"] == "ok"
    # the desk records the ack before this test's observer (added later) hears of it
    wait_until(lambda: any(e.data["command_id"] == fresh["command_id"] for e in acks))
    assert [e.data["command_id"] for e in acks] == [fresh["command_id"]]
    assert agent.tasks.tasks == ["depth"]  # set_tasks seg,depth was not done again
    assert [live.api(f"/api/v1/commands/{c['command_id']}")["state"] for c in sent] == ["ok", "ok", "ok"]
