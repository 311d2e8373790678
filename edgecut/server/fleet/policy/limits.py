"""Bounded work: per-device rate limits, the build queue cap and range checks on numbers from the wire.

A device (or anyone using its id; with mutual TLS the id comes from its certificate) may ask for a
few *new* builds in a burst and then about `builds_per_minute`; cache hits and joining a running
build cost nothing. Needs messages have their own, looser bucket because each one is a registry
write. The queue cap bounds what all devices together can pile up. Refusals are ServerErrors with a
code (RATE_LIMITED, QUEUE_FULL, INVALID_FIELD), so they reach the device as a clear `Error`.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

from pydantic import BaseModel, ConfigDict, Field

from edgecut.server.errors import InvalidFieldError, RateLimitedError

INT64_MAX = (1 << 63) - 1  # SQL BIGINT; a uint64 above it cannot be stored
MAX_LATENCY_MS = 3_600_000.0  # one hour per inference is not a latency target
MAX_MODEL_BYTES = 1 << 40


class LimitSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    build_burst: int = Field(default=5, ge=1, title="new builds one device may start at once")
    builds_per_minute: float = Field(default=6.0, gt=0, title="sustained new builds per device per minute")
    needs_burst: int = Field(default=30, ge=1, title="needs messages one device may send at once")
    needs_per_minute: float = Field(
        default=60.0, gt=0, title="sustained needs messages per device per minute"
    )
    stats_burst: int = Field(default=3, ge=1, title="statistics summaries one device may send at once")
    stats_per_minute: float = Field(
        default=1.0, gt=0, title="sustained statistics summaries per device per minute (issue 31)"
    )
    adapt_min_interval_s: float = Field(
        default=600.0,
        ge=0,
        title="least seconds between two adaptations chosen for one device (issue 31: a drifting device)",
    )
    max_queued_jobs: int = Field(default=64, ge=1, title="builds queued or running, all devices together")
    scrub_interval_s: float = Field(default=3600.0, ge=0, title="seconds between store scrubs (0 = never)")


class RateLimiter:
    """Token buckets by key (device id); the least recently used keys are forgotten beyond `max_keys`."""

    def __init__(self, burst: int, per_minute: float, max_keys: int = 100_000) -> None:
        self.burst, self.rate = float(burst), per_minute / 60.0
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> float:
        """Spend one token; returns 0.0 when allowed, else the seconds until one is available."""
        t = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.pop(key, (self.burst, t))
            tokens = min(self.burst, tokens + (t - at) * self.rate)
            wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
            if not wait:
                tokens -= 1.0
            self._buckets[key] = (tokens, t)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return wait

    def check(self, key: str, what: str) -> None:
        wait = self.take(key)
        if wait:
            raise RateLimitedError(f"device {key!r} sent too many {what}; try again in {math.ceil(wait)} s")


def finite(name: str, value: float, lo: float, hi: float) -> float:
    """`value` when lo <= value <= hi; InvalidFieldError naming the field otherwise (NaN and inf included)."""
    if not math.isfinite(value) or not lo <= value <= hi:
        raise InvalidFieldError(f"{name}={value!r} is out of range: expected a number in [{lo:g}, {hi:g}]")
    return value


def bounded_int(name: str, value: int, hi: int = INT64_MAX) -> int:
    if not 0 <= value <= hi:
        raise InvalidFieldError(f"{name}={value} is out of range: expected 0 to {hi}")
    return value
