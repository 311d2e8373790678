"""A device that stays past its latency budget is re-tailored (a smaller build), over a real broker."""

from __future__ import annotations

import queue
from pathlib import Path

import pytest

from edgecut import topics
from edgecut.broker import EmbeddedBroker
from edgecut.v1 import fleet_pb2 as pb
from tests.support.fleet_server import start_server
from tests.support.onnx_engine import OnnxTestEngine
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def test_sustained_latency_drift_retailors_only_that_device(
    tmp_path: Path, broker: EmbeddedBroker, devices
) -> None:
    server = start_server(
        tmp_path / "state", OnnxTestEngine(tmp_path / "work"), broker.url, latency_sustain_s=0.3
    )
    try:
        hot, cool = devices("hot-pi"), devices("cool-pi")
        for dev in (hot, cool):
            dev.needs(["seg"], seq=1, max_latency_ms=0.2)  # the x86 table: 2 M MACs, above this model
        first = hot.model_ready()
        assert cool.model_ready().artifact_id == first.artifact_id  # one build for both

        def telemetry(dev, p50: float) -> None:
            t = pb.Telemetry(
                device_id=dev.device_id,
                inference_count=100,
                latency_p50_ms=p50,
                artifact_id=first.artifact_id,
            )
            dev.publish(topics.TELEMETRY, t.SerializeToString())

        def retailored() -> pb.ModelReady | None:
            telemetry(cool, 0.08)  # within its budget
            telemetry(hot, 0.5)  # 2.5x its budget (throttled), report after report
            try:
                got, payload, _ = hot.messages.get(timeout=0.05)
            except queue.Empty:
                return None
            return pb.ModelReady.FromString(payload) if got == topics.MODEL else None

        smaller = wait_until(retailored)
        assert smaller.needs_seq == 1 and smaller.macs < first.macs
        assert smaller.build_key != first.build_key
        reg = server.registry
        assert reg is not None
        assert reg.devices.get("hot-pi")["latency_slowdown"] > 1.5
        assert reg.devices.get("cool-pi")["latency_slowdown"] == 0.0  # nobody else's budget changed
        assert reg.devices.get("cool-pi")["offered_artifact_id"] == first.artifact_id
        # its needs sent again (a reconnect) keep the tighter budget (the class model may have learnt
        # a little meanwhile, so the exact build can differ, never the slowdown)
        hot.needs(["seg"], seq=2, max_latency_ms=0.2)
        again = hot.model_ready()
        assert again.needs_seq == 2 and again.macs <= smaller.macs < first.macs
    finally:
        server.stop()
