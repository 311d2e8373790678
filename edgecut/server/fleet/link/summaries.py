"""Statistics summaries devices send (issue 31): checked, then the latest per device and model is kept.

Who can send one: the broker lets a device publish `stats` under its own id only (deploy/mosquitto's
ACL; docs/security.md), so the topic names the sender. Everything below is checked anyway, in this order,
and a summary that fails any check is dropped with one log line (past a rate limit: one a minute, with a
count) and a count by reason (`edgecut_stats_summaries_total{result=...}`); nothing is stored or answered:

| reason | the summary ... |
|---|---|
| `rate_limited` | came faster than the device's token bucket (`limits.stats_*`): a flood costs no parse |
| `malformed` | does not parse as a StatsSummary |
| `wrong_device` | names another device than its topic's |
| `not_offered` | is about a model never offered to that device, or one without a statistics companion |
| `bad_statistics` | fails `norm_stats.from_proto`, counts no image, or has other layers or widths than the companion |
| `replayed` | has a sequence not above the device's last taken one (in the registry: replicas and restarts agree) |

The sequence check comes last and is one conditional UPDATE (state/statistics.py), so a summary that was
refused for another reason does not move the device's counter, and of two copies of one summary
delivered to two replicas (QoS 1 redelivery, a persistent session replaying its queue) only one is taken.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from google.protobuf.message import Message

from edgecut import norm_stats
from edgecut.server.errors import ServerError
from edgecut.server.fleet.policy.limits import INT64_MAX, RateLimiter
from edgecut.server.fleet.state.registry import Registry
from edgecut.v1 import fleet_pb2 as pb

logger = logging.getLogger(__name__)

TAKEN = "taken"
FLOOD_LOG_S = 60.0  # at most one log line this often about summaries past a device's rate limit
REASONS = ("rate_limited", "malformed", "wrong_device", "not_offered", "bad_statistics", "replayed")


class Link(Protocol):
    """What the summaries need of the MQTT bridge."""

    def parse(
        self, cls: type[Message], device_id: str, payload: bytes, answer: bool = True, about: str = ""
    ) -> Any: ...

    def emit(self, kind: str, device: str, **data: Any) -> None: ...


class Refused(Exception):
    def __init__(self, reason: str, why: str) -> None:
        super().__init__(why)
        self.reason = reason


MIN_IMAGES = 16  # the agent's smallest adapt_images (edgecut/agent/settings.py)
SEQUENCE_SKEW_MS = 24 * 3600 * 1000  # how far ahead of the server's clock a device's may run


def digest(msg: pb.StatsSummary) -> str:
    """sha256 of the statistics as sent (each layer's name, means and variances, in order)."""
    h = hashlib.sha256()
    for item in msg.layers:
        h.update(item.layer.encode() + b"\0" + item.mean + item.var)
    return h.hexdigest()


class Summaries:
    def __init__(self, link: Link, registry: Registry, limiter: RateLimiter | None = None) -> None:
        self.link, self.registry, self.limiter = link, registry, limiter
        self._guard = threading.Lock()  # the bridge's lanes handle devices concurrently
        self._flooded, self._flood_said = 0, -FLOOD_LOG_S
        # `on_taken(device_id, summary)` after a summary was taken (the adaptation job, jobs/adapter.py)
        self.on_taken: Callable[[str, pb.StatsSummary], None] | None = None

    def _say(self, device_id: str, exc: Refused) -> None:
        """One line per refusal; a flood past the rate limit at most one line a minute, with its count."""
        if exc.reason == "rate_limited":
            now = time.monotonic()
            with self._guard:
                self._flooded += 1
                if now - self._flood_said < FLOOD_LOG_S:
                    return
                more, self._flooded, self._flood_said = self._flooded - 1, 0, now
            if more:
                exc = Refused(
                    exc.reason, f"{exc}; {more} more summaries past a rate limit since the last report"
                )
        logger.warning("statistics summary from %s dropped (%s): %s", device_id, exc.reason, exc)

    def on_summary(self, device_id: str, payload: bytes) -> None:
        try:
            msg = self._check(device_id, payload)
        except Refused as exc:
            self._say(device_id, exc)
            self.link.emit("stats", device_id, result=exc.reason)
            return
        logger.info(
            "statistics summary %d from %s taken: model %s, %d images, %d layers",
            msg.sequence,
            device_id,
            msg.artifact_id[:12],
            msg.images,
            len(msg.layers),
        )
        self.link.emit(
            "stats",
            device_id,
            result=TAKEN,
            artifact_id=msg.artifact_id,
            sequence=msg.sequence,
            images=msg.images,
        )
        if self.on_taken is not None:
            self.on_taken(device_id, msg)

    def _check(self, device_id: str, payload: bytes) -> pb.StatsSummary:
        if self.limiter is not None:
            try:
                self.limiter.check(device_id, "statistics summaries")
            except ServerError as exc:
                raise Refused("rate_limited", str(exc)) from exc
        msg: pb.StatsSummary | None = self.link.parse(pb.StatsSummary, device_id, payload, answer=False)
        if msg is None:
            raise Refused("malformed", f"{len(payload)} bytes that are not a StatsSummary")
        if msg.device_id != device_id:
            raise Refused("wrong_device", f"it names device {msg.device_id[:64]!r}")
        aid = msg.artifact_id
        if not self.registry.offers.offered_model(device_id, aid):
            raise Refused("not_offered", f"model {aid[:64]!r} was never offered to this device")
        companion = self.registry.statistics.companion(aid)
        if companion is None:
            raise Refused("not_offered", f"model {aid[:12]} has no statistics companion")
        try:
            layers = norm_stats.from_proto(msg)
        except norm_stats.StatsError as exc:
            raise Refused("bad_statistics", str(exc)) from exc
        widths = {name: mean.size for name, (mean, _var) in layers.items()}
        if widths != companion.layers or list(widths) != list(companion.layers):
            raise Refused("bad_statistics", f"its layers are not those of model {aid[:12]}'s companion")
        if not MIN_IMAGES <= msg.images <= INT64_MAX:
            # a summary of a few images is close to per-image values, which a device never sends
            raise Refused("bad_statistics", f"images={msg.images}: a summary covers at least {MIN_IMAGES}")
        # the agent's sequence is at least its clock's ms: one far in the future would hold the device's
        # counter there and refuse every real summary after it as a replay
        horizon = int(time.time() * 1000) + SEQUENCE_SKEW_MS
        if not 1 <= msg.sequence <= min(horizon, INT64_MAX):
            raise Refused("bad_statistics", f"sequence {msg.sequence} is not 1 to now (ms) + one day")
        msg.DiscardUnknownFields()  # only what the contract defines is stored, never extra bytes
        kept = msg.SerializeToString()
        last = self.registry.statistics.take(device_id, aid, msg.sequence, msg.images, digest(msg), kept)
        if last is not None:
            raise Refused("replayed", f"sequence {msg.sequence} is not above the last taken, {last}")
        return msg
