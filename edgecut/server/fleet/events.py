"""What happens in the fleet service, as events for whoever watches: metrics, history, the dashboard, rollouts.

The service modules (jobs, mqtt_bridge, grpc_api) call `Observers.emit(FleetEvent(...))` at the points
an operator cares about; they never depend on who listens. An observer runs on the emitting thread
(paho's network thread, a build worker, a gRPC worker), so it must return quickly: one that has slow
work to do (database writes, SSE fan-out) hands the event to its own thread. An observer that raises is
logged and the others still run.

Kinds and their `data`:

| kind | emitted by | data |
|---|---|---|
| `needs` | bridge | tasks, seq, device_class, budget, ok (False when refused), error |
| `state` | bridge | status, artifact_id, tasks |
| `telemetry` | bridge | the Telemetry message as a dict |
| `swap` | bridge | artifact_id, previous_artifact_id, ok, reason, load_ms |
| `offer` | bridge | artifact_id, build_key, needs_seq, cache_hit, held (the rollout gate chose it) |
| `ack` | bridge | the CommandAck message as a dict |
| `job` | jobs | build_key, stage (queued, running, ..., ready, failed), fraction, source, artifact_id, error |
| `download` | grpc | artifact_id, offset, bytes, complete |
| `rollout` | rollout | rollout id, state, device class, candidate, baseline, reason |
| `command` | commands | command id, action, result (sent, ok, failed), who |
| `adapt` | jobs (adapter) | a summary judged: result (in bucket, rate limited, queued, cached, ...), bucket |
| `adaptation` | jobs (adapter) | an adaptation job's stage (queued, running, adapted, not shipped, failed) |

`source` on a job event says how a request was answered: build (a new job), cache (from the store),
joined (an active job with the same build key).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FleetEvent:
    kind: str
    device_id: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


Observer = Callable[[FleetEvent], None]


class Observers:
    """A fan-out of fleet events to the observers added so far (thread-safe to add and emit)."""

    def __init__(self) -> None:
        self._observers: list[Observer] = []
        self._lock = threading.Lock()

    def add(self, observer: Observer) -> None:
        with self._lock:
            self._observers.append(observer)

    def remove(self, observer: Observer) -> None:
        with self._lock:
            if observer in self._observers:
                self._observers.remove(observer)

    def emit(self, event: FleetEvent) -> None:
        with self._lock:
            observers = list(self._observers)
        for observer in observers:
            try:
                observer(event)
            except Exception:  # a broken observer must not break the service that emits
                logger.exception("fleet observer %r failed on a %s event", observer, event.kind)
