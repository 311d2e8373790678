"""`edgecut agent run` under a systemd-like supervisor: READY=1 when up, watchdog pings, STOPPING=1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edgecut.broker import free_port

pytestmark = pytest.mark.integration


def test_agent_notifies_ready_pings_the_watchdog_and_says_stopping(tmp_path: Path) -> None:
    sock_path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(60)  # agent start-up imports onnxruntime and grpc: seconds on a loaded machine
    cfg = tmp_path / "agent.yaml"
    # no broker listens there: the agent serves and keeps retrying, which is what a device does too
    cfg.write_text(
        f"device_id: pi-3\nbroker_url: mqtt://127.0.0.1:{free_port()}\nstate_dir: {tmp_path / 'state'}\n"
        "listen: 127.0.0.1:0\ntasks: [seg]\n"
    )
    env = {**os.environ, "NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "400000", "OMP_NUM_THREADS": "1"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgecut.agent", "agent", "run", "--config", str(cfg)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        ready = sock.recv(4096).decode()
        assert ready.startswith("READY=1\nSTATUS=local API on 127.0.0.1:"), ready
        assert [sock.recv(100) for _ in range(3)] == [b"WATCHDOG=1"] * 3
        proc.send_signal(signal.SIGTERM)
        while (msg := sock.recv(100)) == b"WATCHDOG=1":
            pass
        assert msg == b"STOPPING=1"
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
