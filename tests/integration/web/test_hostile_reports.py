"""What a device reports cannot break the server or the dashboard (issue 26, item 4).

Every telemetry figure is range-checked: one out of range refuses the whole sample with INVALID_FIELD
naming the field, and nothing of it is stored. A device id from a topic that is not one an agent may
have (charset, at most 64 characters) is refused before anything is stored.
"""

from __future__ import annotations

import logging
import math

import paho.mqtt.client as mqtt
import pytest

from edgecut import topics
from edgecut.v1 import fleet_pb2 as pb
from tests.support.fleet_server import Device
from tests.support.live_fleet import LiveFleet
from tests.support.waiting import wait_until

U64_MAX = (1 << 64) - 1
HOSTILE = [
    ("inference_count", {"inference_count": U64_MAX}),
    ("failed_count", {"failed_count": U64_MAX}),
    ("rss_bytes", {"rss_bytes": U64_MAX}),
    ("latency_p50_ms", {"latency_p50_ms": 1e300}),
    ("latency_p50_ms", {"latency_p50_ms": math.nan}),
    ("latency_p95_ms", {"latency_p95_ms": math.inf}),
    ("cpu_percent", {"cpu_percent": -5.0}),
    ("sent_unix_ms", {"sent_unix_ms": -1}),
    ("artifact_id", {"artifact_id": "a" * 65}),
    ("state", {"state": 99}),  # a number no AgentState has
    ("state_since_unix_ms", {"state_since_unix_ms": -1}),
    ("state_reason", {"state_reason": "r" * 301}),
]


def test_out_of_range_telemetry_is_refused_with_invalid_field(
    live: LiveFleet, caplog: pytest.LogCaptureFixture
) -> None:
    ghost = Device(live.broker_url, "ghost")
    try:
        for field, values in HOSTILE:
            ghost.publish(topics.TELEMETRY, pb.Telemetry(device_id="ghost", **values).SerializeToString())
            err = ghost.error()
            assert err.code == pb.Error.INVALID_FIELD and err.message.startswith(field), (field, err.message)
            assert err.about == "telemetry"  # answers no needs: a device keeps asking for its model
        assert live.server.history is not None and live.server.history.telemetry("ghost") == []
        # a sample in range (at the limits) is stored as sent
        good = pb.Telemetry(device_id="ghost", inference_count=(1 << 63) - 1, latency_p50_ms=12.5)
        ghost.publish(topics.TELEMETRY, good.SerializeToString())
        wait_until(lambda: live.server.history is not None and live.server.history.telemetry("ghost"))
    finally:
        ghost.close()
    (sample,) = live.api("/api/v1/devices/ghost/telemetry")["samples"]
    assert sample["latency_p50_ms"] == 12.5 and sample["inference_count"] == (1 << 63) - 1
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_device_ids_that_no_agent_may_have_are_refused_from_topics(
    live: LiveFleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edgecut.server.fleet.link.mqtt_bridge")
    host, port = live.broker_url.removeprefix("mqtt://").rsplit(":", 1)
    spoofer = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="spoofer")
    spoofer.connect(host, int(port))
    spoofer.loop_start()
    bad_ids = ["%00", "x" * 1000, "x" * 65, "a b", "dév"]
    try:
        for bad in bad_ids:
            t = pb.Telemetry(device_id=bad, inference_count=1).SerializeToString()
            state = pb.DeviceState(device_id=bad, status=pb.DeviceState.ONLINE).SerializeToString()
            needs = pb.TaskNeeds(device_id=bad, tasks=["seg"], seq=1).SerializeToString()
            for leaf, payload in ((topics.TELEMETRY, t), (topics.STATE, state), (topics.NEEDS, needs)):
                spoofer.publish(f"{topics.PREFIX}/{bad}/{leaf}", payload, qos=1).wait_for_publish(5)
        # published after them on the same connection: once it is stored, the others were handled
        ok = "x" * 64
        spoofer.publish(
            topics.device_topic(ok, topics.TELEMETRY),
            pb.Telemetry(inference_count=1).SerializeToString(),
            qos=1,
        )
        wait_until(lambda: live.registry.devices.get(ok))
        # refused on the network thread, before the valid one above went on to be stored; said once a
        # minute with a count, so a flood does not flood the log
        assert live.server.bridge is not None and live.server.bridge.refused_device_ids >= 3 * len(bad_ids)
        assert sum("not a valid device id" in r.getMessage() for r in caplog.records) <= 1
    finally:
        spoofer.disconnect()
        spoofer.loop_stop()
    known = {d["device_id"] for d in live.api("/api/v1/devices")["devices"]}
    assert known.isdisjoint(bad_ids), known
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
