"""What a device reports cannot break the dashboard: non-finite telemetry is stored as 0."""

from __future__ import annotations

import math

from edgecut import topics
from edgecut.v1 import fleet_pb2 as pb
from tests.support.fleet_server import Device
from tests.support.live_fleet import LiveFleet
from tests.support.waiting import wait_until


def test_nan_and_infinite_telemetry_reads_as_zero(live: LiveFleet) -> None:
    ghost = Device(live.broker_url, "ghost")
    try:
        t = pb.Telemetry(
            device_id="ghost",
            latency_p50_ms=math.nan,
            latency_p95_ms=math.inf,
            cpu_percent=-5.0,
            inference_count=3,
        )
        ghost.publish(topics.TELEMETRY, t.SerializeToString())
        wait_until(lambda: live.server.history is not None and live.server.history.telemetry("ghost"))
    finally:
        ghost.close()
    (row,) = [d for d in live.api("/api/v1/devices")["devices"] if d["device_id"] == "ghost"]
    assert (row["latency_p50_ms"], row["latency_p95_ms"], row["inference_count"]) == (0.0, 0.0, 3)
    (sample,) = live.api("/api/v1/devices/ghost/telemetry")["samples"]
    assert sample["latency_p95_ms"] == 0.0 and sample["cpu_percent"] == 0.0
