"""Broker and network faults: the agent keeps serving, reconnects, and loses no QoS 1 message."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from edgecut import topics
from edgecut.agent.serve import AgentClient
from edgecut.v1 import fleet_pb2
from tests.support.agent_helpers import wait_serving, wait_until
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration
IMG = np.random.default_rng(4).random((1, 3, 64, 64), dtype=np.float32)


@pytest.mark.parametrize(
    "outage_s", [pytest.param(2.0, id="2s"), pytest.param(10.0, id="10s", marks=pytest.mark.slow)]
)
def test_broker_stopped_agent_keeps_serving_and_reconnects(make_agent, fleet, broker, outage_s) -> None:
    agent = make_agent(tasks=["seg"])
    wait_serving(agent, ["seg"])  # built by the server, offered over the broker
    assert agent.link.wait_connected(5)
    broker.stop()
    wait_until(lambda: not agent.link.connected)
    ok, failed = 0, 0
    with AgentClient(agent.api_address) as client:
        end = time.monotonic() + outage_s
        while time.monotonic() < end:
            try:
                client.infer(IMG)
                ok += 1
            except Exception:
                failed += 1
            time.sleep(0.01)
        assert client.status().broker_connected is False
        broker.start()
        wait_until(lambda: agent.link.connected)
        assert client.status().broker_connected is True
    assert failed == 0 and ok > outage_s * 20
    assert agent.link.connects == 2
    # the broker forgot everything: the agent re-announced itself (retained ONLINE state)
    got: list[fleet_pb2.DeviceState] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="checker")
    sub.on_message = lambda c, u, m: got.append(fleet_pb2.DeviceState.FromString(bytes(m.payload)))
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe(topics.device_topic(agent.device_id, topics.STATE), 1)
    sub.loop_start()
    try:
        wait_until(lambda: got)
    finally:
        sub.disconnect()
        sub.loop_stop()
    assert got[-1].status == fleet_pb2.DeviceState.ONLINE


def test_messages_made_offline_are_delivered_after_reconnect(make_agent, fleet, broker) -> None:
    """The device's link drops (broker still up): a swap report and new needs wait in the queue."""
    proxy = TcpProxy(broker.port).start()
    try:
        agent = make_agent(tasks=["seg"], broker_url=f"mqtt://127.0.0.1:{proxy.port}")
        dev = agent.device_id
        seg_id = wait_serving(agent, ["seg"])
        with AgentClient(agent.api_address) as client:
            client.set_tasks(["seg", "depth"])
            both_id = wait_serving(agent, ["seg", "depth"])
            assert both_id != seg_id
            proxy.cut()
            wait_until(lambda: not agent.link.connected)
            before = len(fleet.swaps(dev))
            client.rollback()  # a SwapReport made while offline
            assert client.status().artifact_id == seg_id
            client.set_tasks(["seg", "depth", "count"])  # needs made while offline (seq 2)
            time.sleep(0.5)
            assert len(fleet.swaps(dev)) == before  # nothing got through the cut
            assert fleet.device(dev)["needs_seq"] == 1
            proxy.restore()
            wait_until(lambda: agent.link.connected)
        wait_until(
            lambda: any(
                r["artifact_id"] == seg_id and r["previous_artifact_id"] == both_id
                for r in fleet.swaps(dev)[before:]
            )
        )
        wait_until(lambda: fleet.device(dev)["needs_seq"] == 2)
    finally:
        proxy.cut()


def test_killed_agent_is_marked_offline_by_its_last_will(tmp_path: Path, broker, fleet) -> None:
    """A real `agent run` process: ONLINE while it runs, OFFLINE (retained) once it is SIGKILLed;
    the fleet server's registry follows."""
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"device_id: pi-9\nbroker_url: {broker.url}\nstate_dir: {tmp_path / 'state'}\n"
        "listen: 127.0.0.1:0\ntasks: [seg]\nkeepalive_s: 5\n"
    )
    states: list[int] = []
    seen = threading.Event()

    def on_message(c, u, m) -> None:
        states.append(fleet_pb2.DeviceState.FromString(m.payload).status)
        seen.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="watcher")
    sub.on_message = on_message
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe(topics.device_topic("pi-9", topics.STATE), 1)
    sub.loop_start()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgecut.agent", "agent", "run", "--config", str(cfg)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: fleet_pb2.DeviceState.ONLINE in states)
        wait_until(lambda: fleet.device("pi-9").get("status") == "online")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: states[-1] == fleet_pb2.DeviceState.OFFLINE)
        wait_until(lambda: fleet.device("pi-9")["status"] == "offline")
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.disconnect()
        sub.loop_stop()
