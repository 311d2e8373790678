"""Device messages off paho's thread: each device's in order, devices in parallel, bounded."""

from __future__ import annotations

import threading
import time
import zlib

import pytest

from edgecut.server.fleet.link.lanes import Lanes


def _wait(cond, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_one_devices_messages_are_handled_in_arrival_order() -> None:
    lanes = Lanes(4)
    seen: dict[str, list[int]] = {}
    for i in range(200):
        for dev in ("d1", "d2", "d3"):
            lanes.submit(dev, lambda d, n: seen.setdefault(d, []).append(n), dev, i)
    lanes.stop(wait=True)
    assert seen == {d: list(range(200)) for d in ("d1", "d2", "d3")}


def test_a_slow_device_does_not_hold_up_the_others() -> None:
    lanes = Lanes(4)
    release = threading.Event()
    done: list[str] = []
    lanes.submit("slow", release.wait)
    others = [k for k in (f"dev-{i}" for i in range(50)) if _lane_of(lanes, k) is not _lane_of(lanes, "slow")]
    assert others
    for k in others:
        lanes.submit(k, done.append, k)
    _wait(lambda: len(done) == len(others), "the other devices' messages")
    release.set()
    lanes.stop(wait=True)


def _lane_of(lanes: Lanes, key: str) -> object:
    return lanes._lanes[zlib.crc32(key.encode()) % len(lanes._lanes)]


def test_waiting_messages_are_bounded_the_sender_waits() -> None:
    lanes = Lanes(1, max_waiting=2)
    release = threading.Event()
    lanes.submit("a", release.wait)
    lanes.submit("a", lambda: None)
    third = threading.Thread(target=lanes.submit, args=("a", lambda: None), daemon=True)
    third.start()
    time.sleep(0.2)
    assert third.is_alive()  # blocked: two messages wait already
    release.set()
    third.join(30)
    assert not third.is_alive()
    lanes.stop(wait=True)


def test_nothing_is_accepted_after_stop() -> None:
    lanes = Lanes(2)
    lanes.stop()
    ran: list[int] = []
    assert lanes.submit("a", ran.append, 1) is False
    assert ran == []


def test_a_count_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        Lanes(0)
