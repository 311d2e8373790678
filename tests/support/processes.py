"""Child processes of the tests (servers they start): wait until one listens, stop it for sure."""

from __future__ import annotations

import subprocess
import tempfile
import time
from typing import IO

from edgecut.broker import port_open

from .waiting import WAIT_S


def child_log(name: str) -> IO[bytes]:
    """A file for a long-lived child's stderr. Never a pipe nobody reads: once its 64 KiB buffer is
    full the child blocks mid-write (seen: moto's request log hung the session's S3 server after a few
    hundred requests, and every later S3 call timed out)."""
    return tempfile.TemporaryFile(prefix=f"edgecut-{name}-", suffix=".log")


def log_tail(log: IO[bytes] | None, limit: int = 2000) -> str:
    if log is None:
        return ""
    log.seek(0)
    return log.read().decode(errors="replace").strip()[-limit:]


def wait_listening(proc: subprocess.Popen[bytes], port: int, name: str, log: IO[bytes] | None = None) -> None:
    """Return once `proc` accepts connections on 127.0.0.1:`port`; RuntimeError if it exits or stalls."""
    deadline = time.monotonic() + WAIT_S
    while not port_open(port):
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited at start: {log_tail(log)}")
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
