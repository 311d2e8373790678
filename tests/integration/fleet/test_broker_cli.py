"""`edgecut broker`: a trial's MQTT broker in the foreground, as a real process, on both brokers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edgecut.broker import free_port, port_open
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

START_S = 60  # a loaded 2-core machine


def _edgecut() -> list[str]:
    script = Path(sys.executable).parent / "edgecut"
    return [str(script)] if script.exists() else [sys.executable, "-m", "edgecut.cli"]


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*_edgecut(), "broker", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "EDGECUT_EMBEDDED_BROKER": "auto"},
    )


def _first_line(proc: subprocess.Popen[str]) -> str:
    """The broker's first stdout line, read on a thread so a silent process fails the test, not hangs it."""
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline() if proc.stdout else ""))
    reader.start()
    reader.join(START_S)
    assert line, "edgecut broker said nothing"
    return line[0].strip()


def _retained_round_trip(port: int) -> bytes:
    """Publish a retained message, then read it back from a second client."""
    got: list[bytes] = []
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="trial-pub")
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    pub.publish("trial/hello", b"hi", qos=1, retain=True).wait_for_publish(START_S)
    pub.loop_stop()
    pub.disconnect()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="trial-sub")
    sub.on_message = lambda _c, _u, msg: got.append(msg.payload)
    sub.on_connect = lambda c, *_a: c.subscribe("trial/#", qos=1)
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    try:
        wait_until(lambda: got, START_S)
    finally:
        sub.loop_stop()
        sub.disconnect()
    return got[0]


@pytest.mark.parametrize(("kind", "stop"), [("mosquitto", signal.SIGTERM), ("iotcore", signal.SIGINT)])
def test_the_broker_says_which_one_started_serves_clients_and_stops_on_a_signal(
    kind: str, stop: signal.Signals
) -> None:
    port = free_port()
    proc = _start("--port", str(port), "--kind", kind)
    try:
        why = "asked for" + ("; iotcore is for trials and tests, not fleets" if kind == "iotcore" else "")
        assert _first_line(proc) == f"edgecut broker: {kind} ({why}) on mqtt://127.0.0.1:{port}; Ctrl-C stops"
        assert _retained_round_trip(port) == b"hi"
        proc.send_signal(stop)
        _out, err = proc.communicate(timeout=START_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert f"{kind} on mqtt://127.0.0.1:{port} stopped" in err and "Traceback" not in err
    assert not port_open(port)  # the broker child went with it


def test_a_port_in_use_is_refused_in_one_sentence() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*_edgecut(), "broker", "--port", str(port)], capture_output=True, text=True, timeout=START_S
        )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: something already listens on 127.0.0.1:{port} (a broker service?): use it, or pick "
        "another --port (0 = any free one)"
    )
