"""Child processes of the tests (servers they start): wait until one listens, stop it for sure."""

from __future__ import annotations

import subprocess
import time

from edgecut.broker import port_open

from .waiting import WAIT_S


def wait_listening(proc: subprocess.Popen[bytes], port: int, name: str) -> None:
    """Return once `proc` accepts connections on 127.0.0.1:`port`; RuntimeError if it exits or stalls."""
    deadline = time.monotonic() + WAIT_S
    while not port_open(port):
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"{name} exited at start: {err.strip()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not listen on port {port} within {WAIT_S:g} s")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
