"""sd_notify: READY / WATCHDOG / STOPPING datagrams as systemd's Type=notify expects them."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecut.sdnotify import Notifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(10)
    yield s, path
    s.close()


def test_ready_and_stopping_reach_the_socket(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    n.ready("local API on 127.0.0.1:5")
    assert sock.recv(4096) == b"READY=1\nSTATUS=local API on 127.0.0.1:5"
    n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_socket_names_start_with_at() -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"edgecut-test-{os.getpid()}"
    s.bind("\0" + name)
    s.settimeout(10)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).send("READY=1")
        assert s.recv(100) == b"READY=1"
    finally:
        s.close()


def test_watchdog_pings_only_while_healthy(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    healthy = threading.Event()
    healthy.set()
    stop = threading.Event()
    Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"}).start_watchdog(healthy.is_set, stop)
    try:
        assert sock.recv(100) == b"WATCHDOG=1"
        healthy.clear()
        sock.settimeout(0.3)
        while True:  # drain a ping sent before the flag flipped, then silence
            try:
                sock.recv(100)
            except TimeoutError:
                break
        with pytest.raises(TimeoutError):
            sock.recv(100)
    finally:
        stop.set()


def test_outside_systemd_nothing_is_sent() -> None:
    n = Notifier({})
    assert not n.enabled and not n.send("READY=1")
    other = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_s == 0.0  # the watchdog belongs to another process
