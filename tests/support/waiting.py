"""Waiting on events in tests: poll a condition, return at once when it holds.

The limit is an upper bound, not a pace: a generous one costs nothing when things work and keeps the
tests green on a loaded 2-core CI machine, where a step measured in a fraction of a second here can take
several seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

WAIT_S = 30.0


def wait_until(pred: Callable[[], T | None], timeout: float = WAIT_S, interval: float = 0.02) -> T:
    """Poll `pred` until it returns something truthy (returned); AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
    return value
