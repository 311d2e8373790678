"""MQTT adapter: device needs in, `ModelReady` / `Error` out; telemetry, state and swaps into the registry.

Needs, telemetry and swap reports arrive over shared subscriptions (`$share/edgecut-{leaf}/...`, one
group per topic), so server replicas split them; device state is retained and read by every replica
(plain subscription).
A payload that does not parse, is larger than `topics.MAX_PAYLOAD`, or needs that cannot be built get
an `Error` on the device's `error` topic and the bridge carries on. Needs older than the device's
latest (a lower seq not sent later) are dropped unanswered. `ModelReady` — with the manifest signed
for that device (signer.py) — is published retained on the device's `model` topic, so a device that
reconnects finds its latest model. Commands are never published retained; their `CommandAck`s are
recorded on the device. Statistics summaries (issue 31) are checked and kept by summaries.py.

paho-mqtt 2.x, callback API v2; MQTT 3.1.1 by default (the iotcore fallback broker only shares
subscriptions under 3.1.1), MQTT 5 by option. paho's network thread reconnects with backoff.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from paho.mqtt.enums import CallbackAPIVersion

from edgecut import tls, topics
from edgecut.errors import ConfigError
from edgecut.server.errors import TooLargeError
from edgecut.server.fleet import error_map
from edgecut.server.fleet.events import FleetEvent, Observers
from edgecut.server.fleet.jobs.manager import JobManager
from edgecut.server.fleet.link import requests, wire
from edgecut.server.fleet.link.broker import PROTOCOLS, BrokerAuth, parse_broker_url, server_subscriptions
from edgecut.server.fleet.link.delivery import Delivery
from edgecut.server.fleet.link.lanes import Lanes
from edgecut.server.fleet.link.reports import DeviceReports, slowdown_of
from edgecut.server.fleet.link.signer import FleetSigner
from edgecut.server.fleet.link.summaries import Summaries
from edgecut.server.fleet.policy.budget import BudgetPolicy
from edgecut.server.fleet.policy.limits import RateLimiter
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.waiters import Waiter
from edgecut.v1 import fleet_pb2 as pb

logger = logging.getLogger(__name__)
BAD_ID_LOG_S = 60.0  # at most one log line per this many seconds about refused device ids


class MqttBridge:
    def __init__(
        self,
        broker_url: str,
        jobs: JobManager,
        registry: Registry,
        policy: BudgetPolicy,
        grpc_address: str,
        signer: FleetSigner,
        client_id: str = "",
        protocol: str = "3.1.1",
        group: str = topics.SHARE_GROUP,
        keepalive: int = 30,
        reconnect_max_s: int = 30,
        auth: BrokerAuth | None = None,
        needs_limiter: RateLimiter | None = None,
        stats_limiter: RateLimiter | None = None,
        observers: Observers | None = None,
        lanes: int = 0,
    ) -> None:
        """`lanes` > 0 handles device messages on that many ordered threads (link/lanes.py); 0 on paho's."""
        if protocol not in PROTOCOLS:
            raise ConfigError(f"mqtt protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
        self.host, self.port, use_tls, user, password = parse_broker_url(broker_url)
        auth = auth or BrokerAuth()
        self.jobs, self.registry, self.policy = jobs, registry, policy
        self.needs_limiter = needs_limiter
        self.group, self.keepalive = group, keepalive
        self.observers = observers or Observers()
        self._v5 = protocol == "5"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"edgecut-srv-{uuid.uuid4().hex[:8]}",
            protocol=PROTOCOLS[protocol],
            clean_session=None if self._v5 else True,
        )
        if use_tls:
            tls.mqtt_tls(self.client, auth.ca_file, auth.cert_file, auth.key_file)
        if user or auth.username:
            self.client.username_pw_set(user or auth.username, password if user else (auth.password or None))
        self.client.reconnect_delay_set(min_delay=1, max_delay=reconnect_max_s)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.ready = threading.Event()  # connected and subscribed
        self._refreshed = False
        # the pieces behind the connection: device reports in, answers (offers, errors) out
        self.reports = DeviceReports(self, registry, policy, jobs.store, jobs.scrubber.recheck)
        self.delivery = Delivery(self, registry, jobs.store, signer, grpc_address)
        self.summaries = Summaries(self, registry, stats_limiter)
        self._handlers: dict[str, Callable[[str, bytes], None]] = {
            topics.NEEDS: self._on_needs,
            topics.TELEMETRY: self.reports.on_telemetry,
            topics.SWAP: self.reports.on_swap,
            topics.STATE: self.reports.on_state,
            topics.ACK: self.reports.on_ack,
            topics.STATS: self.summaries.on_summary,
        }
        jobs.add_finish_hook(self.delivery.on_job_finished)
        jobs.add_refined_hook(self.delivery.on_refined)
        # issue 31: a summary taken may ask for an adapted model; an adapted device keeps its model
        self.summaries.on_taken = jobs.adapter.on_summary
        self.delivery.adapted = jobs.adapter.instead
        jobs.adapter.offer = self.delivery.offer_adapted
        self._lanes = Lanes(lanes, name="edgecut-msg") if lanes > 0 else None
        self._guard = threading.Lock()  # the counters below: lanes handle devices concurrently
        self._bad_ids, self._bad_ids_said = 0, -BAD_ID_LOG_S  # refused device ids (see _bad_id)
        self.refused_device_ids = 0  # messages refused for their topic's device id, since start

    # -- connection ----------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; paho's loop retries until the broker answers."""
        self.client.connect_async(self.host, self.port, self.keepalive)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        if self._lanes is not None:
            self._lanes.stop()
        self.ready.clear()
        self.reports.stop()

    def _on_connect(self, client: mqtt.Client, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            logger.warning("MQTT broker %s:%d refused the connection: %s", self.host, self.port, reason)
            return
        logger.info("MQTT connected to %s:%d; subscribing", self.host, self.port)
        client.subscribe(server_subscriptions(self.group))

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, reasons: list[Any], _props: Any) -> None:
        failed = [r for r in reasons if r.is_failure]
        if failed:
            logger.error("MQTT broker refused subscriptions: %s", failed)
            return
        self.ready.set()
        if not self._refreshed:  # once per process: after an upgrade the devices' build keys changed
            self._refreshed = True
            threading.Thread(target=self.refresh_known_devices, name="edgecut-refresh", daemon=True).start()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self.ready.clear()
        if reason.is_failure:
            logger.warning("MQTT connection lost (%s); reconnecting with backoff", reason)

    # -- inbound -------------------------------------------------------------------------------

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        device_id = topics.device_of(msg.topic)
        leaf = msg.topic.rsplit("/", 1)[-1]
        handler = self._handlers.get(leaf)
        if handler is None:
            logger.debug("ignoring message on %s", msg.topic)
            return
        if device_id is None:  # e.g. "%00" or 1,000 characters: never stored, never answered
            self._bad_id(msg.topic)
            return
        if len(msg.payload) > topics.MAX_PAYLOAD:
            logger.warning(
                "%d-byte payload on %s dropped (limit %d)", len(msg.payload), msg.topic, topics.MAX_PAYLOAD
            )
            if leaf == topics.NEEDS:
                self._refuse(
                    device_id,
                    0,
                    TooLargeError(
                        f"the {len(msg.payload)}-byte needs message is above the {topics.MAX_PAYLOAD}-byte "
                        "broker limit (docs/protocol.md)"
                    ),
                )
            return
        if self._lanes is not None:
            self._lanes.submit(device_id, self._handle, handler, msg.topic, device_id, bytes(msg.payload))
        else:
            self._handle(handler, msg.topic, device_id, bytes(msg.payload))

    def _bad_id(self, topic: str) -> None:
        """Said at most once a minute, with a count: a flood of such messages must not flood the log."""
        now = time.monotonic()
        with self._guard:
            self._bad_ids += 1
            self.refused_device_ids += 1
            due = now - self._bad_ids_said >= BAD_ID_LOG_S
            if due:
                count, self._bad_ids, self._bad_ids_said = self._bad_ids, 0, now
        if due:
            logger.warning(
                "message on %r refused: not a valid device id (1-64 of A-Z a-z 0-9 _ . -)%s",
                topic[:120],
                f"; {count - 1} more such messages since the last report" if count > 1 else "",
            )

    def _handle(
        self, handler: Callable[[str, bytes], None], topic: str, device_id: str, payload: bytes
    ) -> None:
        try:
            handler(device_id, payload)
        except Exception:  # one bad message must never stop the bridge
            logger.exception("handling %s failed", topic)
            self.publish_error(
                pb.Error(
                    code=pb.Error.INTERNAL,
                    device_id=device_id,
                    message=error_map.error_sentence(RuntimeError()),
                )
            )

    def parse(
        self, cls: type[Message], device_id: str, payload: bytes, answer: bool = True, about: str = ""
    ) -> Any:
        try:
            return cls.FromString(payload)
        except DecodeError as exc:
            name = cls.DESCRIPTOR.name
            logger.warning("malformed %s from %s (%d bytes): %s", name, device_id, len(payload), exc)
            if answer:
                err = error_map.malformed(name, len(payload), str(exc) or "not protobuf", device_id)
                err.about = about
                self.publish_error(err)
            return None

    def _on_needs(self, device_id: str, payload: bytes) -> None:
        needs: pb.TaskNeeds | None = self.parse(pb.TaskNeeds, device_id, payload)
        if needs is None:
            self.registry.devices.record_error(device_id, "malformed needs message")
            self.emit("needs", device_id, ok=False, error="malformed needs message")
            return
        if needs.device_id and needs.device_id != device_id:
            logger.warning(
                "needs on %s's topic names device %r; the topic wins", device_id, needs.device_id[:64]
            )
        seq, resources = needs.seq, needs.resources
        budget_label, device_class = "", resources.device_class[:64]
        try:
            if self.needs_limiter is not None:
                self.needs_limiter.check(device_id, "needs messages")
            decision, spec = requests.needs_decision(self.policy, needs, self._slowdown(device_id))
            budget_label, device_class = decision.budget.bucket(), decision.device_class
        except Exception as exc:
            # answered even when older than the latest: an Error is not retained and changes nothing
            self._record_needs(device_id, needs, device_class, budget_label)
            self._refuse(device_id, seq, exc)
            return
        if not self._record_needs(device_id, needs, device_class, budget_label):
            return
        try:
            sub = self.jobs.submit(spec, waiter=Waiter(device_id, seq), requester=device_id)
        except Exception as exc:
            self._refuse(device_id, seq, exc)
            return
        self.emit("needs", device_id, tasks=list(spec.tasks), seq=seq, device_class=device_class, ok=True)
        logger.info(
            "device %s needs %s (seq %d) -> build %s", device_id, ",".join(spec.tasks), seq, sub.build_key
        )
        if sub.ready is not None:
            self.delivery.answer(device_id, seq, sub.ready)

    def refresh_known_devices(self) -> int:
        """Ask again, for each online device, for the build its recorded needs map to now.

        A device sends its needs when they change or it reconnects, not when the *server* changes. After
        an upgrade (a new base model or pipeline version) the same needs have a new build key: this
        queues those builds, so the new variants reach the fleet (through the rollout gate) without
        every device having to reconnect. Needs whose key is the one last offered cost nothing.
        """
        asked = 0
        for dev in self.registry.devices.all():
            if dev["status"] != "online" or not dev["needs_json"]:
                continue
            if self.reask(dev, "server upgraded"):
                asked += 1
        return asked

    def reask(self, dev: dict[str, Any], why: str) -> bool:
        """Submit the build the device's recorded needs map to now, when it is not the one last offered."""
        device_id = dev["device_id"]
        try:
            needs = json_format.ParseDict(dev["needs_json"], pb.TaskNeeds(), ignore_unknown_fields=True)
            _, spec = requests.needs_decision(self.policy, needs, slowdown_of(dev))
            if self.jobs.build_key(spec) == dev["build_key"]:
                return False
            sub = self.jobs.submit(spec, waiter=Waiter(device_id, int(dev["needs_seq"])), requester=device_id)
        except Exception as exc:  # its next needs message will say what is wrong
            logger.info("not asking again for %s: %s", device_id, exc)
            return False
        logger.info("device %s: its needs now map to build %s (%s)", device_id, sub.build_key, why)
        if sub.ready is not None:
            self.delivery.answer(device_id, int(dev["needs_seq"]), sub.ready)
        return True

    def _slowdown(self, device_id: str) -> float:
        dev = self.registry.devices.get(device_id)
        return slowdown_of(dev) if dev is not None else 1.0

    def _record_needs(self, device_id: str, needs: pb.TaskNeeds, device_class: str, budget: str) -> bool:
        """Record the needs; False when they are older than the device's latest (then nothing is answered)."""
        if needs.seq > requests.INT64_MAX:  # cannot be stored; the refusal is answered with seq 0
            needs.seq = 0
        fresh = self.registry.devices.record_needs(
            device_id,
            [t[: requests.MAX_TASK_NAME] for t in needs.tasks[: requests.MAX_TASKS]],
            needs.seq,
            wire.to_dict(needs),
            wire.to_dict(needs.resources),
            device_class,
            budget,
            max(0, min(needs.sent_unix_ms, requests.INT64_MAX)),
        )
        if not fresh:
            logger.info("device %s: needs seq %d is older than its latest; ignored", device_id, needs.seq)
        return fresh

    def _refuse(self, device_id: str, seq: int, exc: Exception) -> None:
        err = error_map.to_error(exc, device_id, seq)
        if err.code == pb.Error.INTERNAL:
            logger.error("needs of %s failed: %r", device_id, exc)
        self.registry.devices.record_error(device_id, err.message)
        self.publish_error(err)
        self.emit("needs", device_id, seq=seq, ok=False, error=err.message)

    def emit(self, kind: str, device: str, **data: Any) -> None:
        # `device`, not `device_id`: telemetry and acks carry a device_id field of their own
        self.observers.emit(FleetEvent(kind, device, data))

    # -- outbound ------------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain)

    def publish_command(self, device_id: str, payload: bytes) -> None:
        """A serialized (signed) Command to the device: QoS 1 and never retained (a restart replays nothing)."""
        self.client.publish(topics.device_topic(device_id, topics.COMMAND), payload, qos=1, retain=False)

    def publish_error(self, err: pb.Error) -> None:
        if not err.device_id:
            return
        self.client.publish(topics.device_topic(err.device_id, topics.ERROR), err.SerializeToString(), qos=1)
