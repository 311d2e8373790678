"""How many devices talk through the broker, against what the embedded iotcore broker serves well.

iotcore (rumqttd compiled into a pip wheel) is the embedded broker edgecut falls back to when
mosquitto is not installed: fine for trials and tests, slow for a fleet. `edgecut bench fleet
--broker iotcore` measured where it stops serving well (docs/operations.md, "When to leave the
embedded broker"); the server is told which embedded broker it runs on (the demo, the benches) and
warns once when more devices than that are heard from. An external broker is never judged: its
capacity is the operator's to size.
"""

from __future__ import annotations

import logging
import threading

from edgecut.server.fleet.events import FleetEvent

logger = logging.getLogger(__name__)

# iotcore answers 60-75 cached needs a second at any fleet size (`edgecut bench fleet --broker iotcore`,
# docs/operations.md): 250 devices are answered within ~4 s, 1,000 wait 13-37 s (mosquitto: 3 s).
IOTCORE_DEVICES = 250
DEVICE_EVENTS = ("needs", "state", "telemetry", "swap", "ack")  # messages a device sent over MQTT


class BrokerLoad:
    """A fleet observer: counts the devices heard from and warns once past the embedded broker's limit."""

    def __init__(self, broker_kind: str, limit: int = IOTCORE_DEVICES) -> None:
        self.broker_kind, self.limit = broker_kind, limit
        self._devices: set[str] = set()
        self._lock = threading.Lock()
        self.warned = False

    def __call__(self, event: FleetEvent) -> None:
        if self.broker_kind != "iotcore" or self.warned or event.kind not in DEVICE_EVENTS:
            return
        with self._lock:
            if event.kind == "state" and event.data.get("status") == "offline":
                self._devices.discard(event.device_id)
                return
            self._devices.add(event.device_id)
            if len(self._devices) <= self.limit or self.warned:
                return
            self.warned = True
            self._devices.clear()  # counted no longer: the warning is given once
        logger.warning(
            "the embedded iotcore broker now carries more than %d devices, the most it serves well "
            "(answers slow down several-fold beyond it): run mosquitto or a clustered MQTT 5 broker "
            "for a fleet (docs/operations.md)",
            self.limit,
        )
