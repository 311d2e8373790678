"""MQTT adapter: device needs in, `ModelReady` / `Error` out; telemetry, state and swaps into the registry.

Needs, telemetry and swap reports arrive over shared subscriptions (`$share/edgecut-{leaf}/...`, one
group per topic), so server replicas split them; device state is retained and read by every replica
(plain subscription).
A payload that does not parse, is larger than `topics.MAX_PAYLOAD`, or needs that cannot be built get
an `Error` on the device's `error` topic and the bridge carries on. Needs older than the device's
latest (a lower seq not sent later) are dropped unanswered. `ModelReady` — with the manifest signed
for that device (signer.py) — is published retained on the device's `model` topic, so a device that
reconnects finds its latest model. Commands are never published retained; their `CommandAck`s are
recorded on the device.

paho-mqtt 2.x, callback API v2; MQTT 3.1.1 by default (the iotcore fallback broker only shares
subscriptions under 3.1.1), MQTT 5 by option. paho's network thread reconnects with backoff.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import paho.mqtt.client as mqtt
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from paho.mqtt.enums import CallbackAPIVersion

from edgecut import tls, topics
from edgecut.envelopes import now_ms
from edgecut.errors import ConfigError, EdgecutError
from edgecut.server.errors import ServerError, TooLargeError
from edgecut.server.fleet.events import FleetEvent, Observers
from edgecut.server.fleet.jobs.manager import JobManager
from edgecut.server.fleet.jobs.outcomes import Failed, Outcome, Ready
from edgecut.server.fleet.jobs.rollout_policy import keeps_architecture
from edgecut.server.fleet.link import error_map, requests, wire
from edgecut.server.fleet.link.signer import FleetSigner
from edgecut.server.fleet.policy.budget import BudgetPolicy
from edgecut.server.fleet.policy.limits import RateLimiter
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.waiters import Waiter
from edgecut.v1 import fleet_pb2 as pb

logger = logging.getLogger(__name__)

PROTOCOLS = {"3.1.1": mqtt.MQTTv311, "5": mqtt.MQTTv5}

# (device id, needs seq, the build that answers it) -> the build to offer instead, or None to offer
# nothing now. The staged rollout (fleet/jobs/rollout.py) is one: it holds a new variant back from all but
# the canaries of a device class.
OfferGate = Callable[[str, int, Ready], "Ready | None"]


def parse_broker_url(url: str) -> tuple[str, int, bool, str | None, str | None]:
    """`mqtt://[user:pass@]host[:1883]` or `mqtts://...:8883` -> host, port, tls, username, password."""
    u = urlparse(url)
    if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not u.hostname:
        raise ConfigError(f"broker URL {url!r}: expected mqtt://host:port or mqtts://host:port")
    tls = u.scheme in ("mqtts", "ssl")
    try:
        port = u.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise ConfigError(f"broker URL {url!r}: bad port") from exc
    user = unquote(u.username) if u.username else None
    password = unquote(u.password) if u.password else None
    return u.hostname, port, tls, user, password


def _slowdown_of(dev: dict[str, Any]) -> float:
    return max(1.0, float(dev.get("latency_slowdown") or 0.0))


def server_subscriptions(group: str = topics.SHARE_GROUP) -> list[tuple[str, int]]:
    """The filters (and QoS) every server replica subscribes: shared for work, plain for retained state."""
    return [
        (topics.shared(topics.NEEDS, group), 1),
        (topics.shared(topics.TELEMETRY, group), 0),
        (topics.shared(topics.SWAP, group), 1),
        (topics.shared(topics.ACK, group), 1),
        (topics.device_topic("+", topics.STATE), 1),  # retained; every replica reads it
    ]


@dataclass(frozen=True)
class BrokerAuth:
    """How the bridge proves itself to the broker (URL credentials win over `username`/`password`)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str = ""
    password: str = field(default="", repr=False)  # never in a log line


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
        observers: Observers | None = None,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ConfigError(f"mqtt protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
        self.host, self.port, use_tls, user, password = parse_broker_url(broker_url)
        auth = auth or BrokerAuth()
        self.jobs, self.registry, self.policy = jobs, registry, policy
        self.signer, self.needs_limiter = signer, needs_limiter
        self.grpc_address = grpc_address
        self.group, self.keepalive = group, keepalive
        self.observers = observers or Observers()
        self.offer_gate: OfferGate | None = None
        # True = hold a refinement's offers back (a staged rollout judges its key's quick model now)
        self.refinement_hold: Callable[[Ready], bool] | None = None
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
        self._handlers: dict[str, Callable[[str, bytes], None]] = {
            topics.NEEDS: self._on_needs,
            topics.TELEMETRY: self._on_telemetry,
            topics.SWAP: self._on_swap,
            topics.STATE: self._on_state,
            topics.ACK: self._on_ack,
        }
        jobs.add_finish_hook(self._on_job_finished)
        jobs.add_refined_hook(self._on_refined)
        # re-hashing an artifact a device found corrupt must not block paho's network thread
        self._rechecks = ThreadPoolExecutor(1, thread_name_prefix="edgecut-recheck")
        self._rechecking: set[str] = set()
        self._macs: dict[str, int] = {}  # artifact id -> its MACs (latency observations)

    # -- connection ----------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; paho's loop retries until the broker answers."""
        self.client.connect_async(self.host, self.port, self.keepalive)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.ready.clear()
        self._rechecks.shutdown(wait=False, cancel_futures=True)

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
            logger.warning(
                "message on %r refused: not a valid device id (1-64 of A-Z a-z 0-9 _ . -)", msg.topic[:120]
            )
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
        try:
            handler(device_id, bytes(msg.payload))
        except Exception:  # one bad message must never stop the bridge
            logger.exception("handling %s failed", msg.topic)
            self.publish_error(
                pb.Error(
                    code=pb.Error.INTERNAL,
                    device_id=device_id,
                    message=error_map.error_sentence(RuntimeError()),
                )
            )

    def _parse(
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
        needs: pb.TaskNeeds | None = self._parse(pb.TaskNeeds, device_id, payload)
        if needs is None:
            self.registry.devices.record_error(device_id, "malformed needs message")
            self._emit("needs", device_id, ok=False, error="malformed needs message")
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
        self._emit("needs", device_id, tasks=list(spec.tasks), seq=seq, device_class=device_class, ok=True)
        logger.info(
            "device %s needs %s (seq %d) -> build %s", device_id, ",".join(spec.tasks), seq, sub.build_key
        )
        if sub.ready is not None:
            self._offer(device_id, seq, sub.ready)

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
            if self._reask(dev, "server upgraded"):
                asked += 1
        return asked

    def _reask(self, dev: dict[str, Any], why: str) -> bool:
        """Submit the build the device's recorded needs map to now, when it is not the one last offered."""
        device_id = dev["device_id"]
        try:
            needs = json_format.ParseDict(dev["needs_json"], pb.TaskNeeds(), ignore_unknown_fields=True)
            _, spec = requests.needs_decision(self.policy, needs, _slowdown_of(dev))
            if self.jobs.build_key(spec) == dev["build_key"]:
                return False
            sub = self.jobs.submit(spec, waiter=Waiter(device_id, int(dev["needs_seq"])), requester=device_id)
        except Exception as exc:  # its next needs message will say what is wrong
            logger.info("not asking again for %s: %s", device_id, exc)
            return False
        logger.info("device %s: its needs now map to build %s (%s)", device_id, sub.build_key, why)
        if sub.ready is not None:
            self._offer(device_id, int(dev["needs_seq"]), sub.ready)
        return True

    def _slowdown(self, device_id: str) -> float:
        dev = self.registry.devices.get(device_id)
        return _slowdown_of(dev) if dev is not None else 1.0

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
        self._emit("needs", device_id, seq=seq, ok=False, error=err.message)

    def _emit(self, kind: str, device: str, **data: Any) -> None:
        # `device`, not `device_id`: telemetry and acks carry a device_id field of their own
        self.observers.emit(FleetEvent(kind, device, data))

    def _on_telemetry(self, device_id: str, payload: bytes) -> None:
        t: pb.Telemetry | None = self._parse(pb.Telemetry, device_id, payload, about="telemetry")
        if t is None:
            return
        try:
            requests.check_telemetry(t)
        except ServerError as exc:  # nothing of it is stored: one bad figure discredits the sample
            logger.warning("telemetry of %s refused: %s", device_id, exc)
            err = error_map.to_error(exc, device_id, 0)
            err.about = "telemetry"  # answers no needs: the device keeps asking for its model
            self.publish_error(err)
            return
        t.device_id = device_id  # the topic names the device, whatever the payload claims
        telemetry = wire.to_dict(t)
        self.registry.devices.record_telemetry(device_id, telemetry)
        self._emit("telemetry", device_id, **telemetry)
        self._watch_latency(device_id, t)

    def _watch_latency(self, device_id: str, t: pb.Telemetry) -> None:
        """Feed the class's cost model; re-tailor the device when it stays past its latency budget."""
        if not t.artifact_id or t.latency_p50_ms <= 0:
            return
        dev = self.registry.devices.get(device_id)
        macs = self._macs_of(t.artifact_id[:64])
        if dev is None or not macs:
            return
        resources = json_format.ParseDict(dev["resources"] or {}, pb.Resources(), ignore_unknown_fields=True)
        name, row = self.policy.row(resources)
        budget_ms = float((dev["needs_json"] or {}).get("max_latency_ms", 0.0) or 0.0)
        slowdown = self.policy.latency.observe(
            device_id,
            name,
            row.macs_per_ms,
            macs,
            t.latency_p50_ms,
            t.inference_count,
            t.artifact_id[:64],
            budget_ms,
        )
        if slowdown is None:
            return
        slowdown = max(slowdown, _slowdown_of(dev))
        logger.warning(
            "device %s: p50 %.1f ms stays above its %.1f ms budget; re-tailoring (%.2fx slower than its class)",
            device_id,
            t.latency_p50_ms,
            budget_ms,
            slowdown,
        )
        self.registry.devices.set_latency_slowdown(device_id, slowdown)
        self._emit("drift", device_id, p50_ms=t.latency_p50_ms, budget_ms=budget_ms, slowdown=slowdown)
        self._reask({**dev, "latency_slowdown": slowdown}, "latency drift")

    def _macs_of(self, artifact_id: str) -> int:
        if artifact_id not in self._macs:
            try:
                self._macs[artifact_id] = max(0, self.jobs.store.meta(artifact_id).macs)
            except Exception:  # not one of ours (or gone): no figure to learn from
                self._macs[artifact_id] = 0
            while len(self._macs) > 4096:
                self._macs.pop(next(iter(self._macs)))
        return self._macs[artifact_id]

    def _on_swap(self, device_id: str, payload: bytes) -> None:
        s: pb.SwapReport | None = self._parse(pb.SwapReport, device_id, payload)
        if s is not None:
            self.registry.offers.record_swap(
                device_id,
                s.artifact_id[:64],
                s.ok,
                s.reason[:2000],
                s.previous_artifact_id[:64],
                s.load_ms if math.isfinite(s.load_ms) else 0.0,
                s.verified_key_id[:64],
            )
            if not s.ok and s.artifact_id and s.artifact_id not in self._rechecking:
                self._rechecking.add(s.artifact_id)
                self._rechecks.submit(self._recheck, s.artifact_id)

            self._emit(
                "swap",
                device_id,
                artifact_id=s.artifact_id,
                previous_artifact_id=s.previous_artifact_id,
                ok=s.ok,
                reason=s.reason,
                load_ms=s.load_ms,
            )

    def _recheck(self, artifact_id: str) -> None:
        try:
            if self.jobs.store.exists(artifact_id) and self.jobs.scrubber.recheck(artifact_id):
                logger.error("a device refused %s and its stored bytes were corrupt: rebuilding", artifact_id)
        except Exception:
            logger.exception("recheck of %s failed", artifact_id)
        finally:
            self._rechecking.discard(artifact_id)

    def _on_ack(self, device_id: str, payload: bytes) -> None:
        ack: pb.CommandAck | None = self._parse(pb.CommandAck, device_id, payload, answer=False)
        if ack is not None:
            logger.info(
                "device %s %s command %s (%s)%s",
                device_id,
                "did" if ack.ok else "refused",
                ack.command_id[:64],
                ack.action[:32],
                f": {ack.reason[:200]}" if ack.reason else "",
            )
            self.registry.devices.record_command_ack(device_id, wire.to_dict(ack))
            self._emit("ack", device_id, **wire.to_dict(ack))

    def _on_state(self, device_id: str, payload: bytes) -> None:
        if not payload:  # a cleared retained message
            return
        # Every replica receives retained state, so only log a bad one instead of answering N times.
        st: pb.DeviceState | None = self._parse(pb.DeviceState, device_id, payload, answer=False)
        if st is not None:
            # an enum number this version does not know (open enums) is "unknown", not a crash
            names = {v.number: v.name for v in pb.DeviceState.Status.DESCRIPTOR.values}
            status = names.get(st.status, "unknown").lower().replace("status_", "")
            self.registry.devices.record_state(
                device_id,
                status[:16],
                st.artifact_id[:64],
                [t[:64] for t in st.tasks[:32]],
                st.agent_version[:64],
                st.pinned_artifact_id[:64],
            )
            self._emit(
                "state", device_id, status=status, artifact_id=st.artifact_id[:64], tasks=list(st.tasks[:32])
            )

    # -- outbound ------------------------------------------------------------------------------

    def _on_job_finished(self, outcome: Outcome) -> None:
        """Answer every device that asked for this build (persisted, so this also works after a restart)."""
        for w in self.registry.waiters.take(outcome.build_key):
            dev = self.registry.devices.get(w.device_id)
            if dev is not None and int(dev["needs_seq"]) > w.needs_seq:
                logger.info(
                    "device %s moved on to needs seq %s; not answering seq %d",
                    w.device_id,
                    dev["needs_seq"],
                    w.needs_seq,
                )
                continue
            if isinstance(outcome, Ready):
                self._offer(w.device_id, w.needs_seq, outcome)
            elif isinstance(outcome, Failed):
                self.registry.devices.record_error(w.device_id, outcome.message)
                self.publish_error(wire.error(outcome, w.device_id, w.needs_seq))

    def _on_refined(self, ready: Ready) -> None:
        """Offer a refinement to every device whose latest offer is its parent.

        A refinement that keeps its parent's architecture (same MACs, parameters, inputs, outputs),
        trained longer and measured better on the validation set, passes the rollout gate: a staged
        rollout guards *new variants*, and a device holding the parent already passed (or was never
        subject to) the parent's rollout. One with another architecture (the engine's from-scratch
        candidate) goes through the gate like any new variant: canaries first.
        While the parent's key is in canary, its refinements wait; the promotion offers the best one.
        """
        if self.refinement_hold is not None and self.refinement_hold(ready):
            logger.info(
                "refinement %d of %s waits for its rollout's verdict", ready.refinement, ready.build_key
            )
            return
        try:
            same = keeps_architecture(ready.artifact.meta, self.jobs.store.meta(ready.parent_artifact_id))
        except EdgecutError:  # the parent is gone from the store: judge it as a new variant
            same = False
        for device_id, seq in self.registry.offers.devices_on(ready.parent_artifact_id):
            if same:
                self.offer(device_id, seq, ready)
            else:
                self._offer(device_id, seq, ready)

    def _offer(self, device_id: str, seq: int, ready: Ready) -> None:
        """Answer a device's needs with `ready`, or with what the offer gate puts in its place."""
        chosen: Ready | None = ready
        if self.offer_gate is not None:
            try:
                chosen = self.offer_gate(device_id, seq, ready)
            except Exception:  # a gate bug must not leave the device without an answer
                logger.exception("offer gate failed for %s; offering the build as is", device_id)
        if chosen is None:
            logger.info(
                "holding %s back from %s (staged rollout)", ready.artifact.artifact_id[:12], device_id
            )
            return
        self.offer(device_id, seq, chosen, held=chosen is not ready)

    def offer(self, device_id: str, seq: int, ready: Ready, held: bool = False) -> None:
        """Publish a retained ModelReady for `ready` to the device (no gate: rollouts call this)."""
        offer_seq = self.registry.offers.next_seq(device_id, now_ms())
        msg, manifest = self.signer.offer(ready, self.grpc_address, device_id, seq, offer_seq)
        payload = msg.SerializeToString()
        if (
            len(payload) > topics.MAX_PAYLOAD
        ):  # e.g. a model with very many metrics: never hand the broker more
            logger.error(
                "offer of %s to %s is %d bytes, above the broker limit",
                msg.artifact_id,
                device_id,
                len(payload),
            )
            self.publish_error(
                error_map.to_error(TooLargeError("the model offer exceeds the broker limit"), device_id, seq)
            )
            return
        self.registry.offers.record(device_id, ready.build_key, msg.artifact_id, seq, wire.to_dict(manifest))
        self.client.publish(topics.device_topic(device_id, topics.MODEL), payload, qos=1, retain=True)
        logger.info(
            "offered %s to %s (cache hit: %s, refinement %d)",
            msg.artifact_id[:12],
            device_id,
            ready.cache_hit,
            ready.refinement,
        )
        self._emit(
            "offer",
            device_id,
            artifact_id=msg.artifact_id,
            build_key=ready.build_key,
            needs_seq=seq,
            cache_hit=ready.cache_hit,
            held=held,
            refinement=ready.refinement,
            parent_artifact_id=ready.parent_artifact_id,
        )

    def publish_command(self, device_id: str, payload: bytes) -> None:
        """A serialized (signed) Command to the device: QoS 1 and never retained (a restart replays nothing)."""
        self.client.publish(topics.device_topic(device_id, topics.COMMAND), payload, qos=1, retain=False)

    def publish_error(self, err: pb.Error) -> None:
        if not err.device_id:
            return
        self.client.publish(topics.device_topic(err.device_id, topics.ERROR), err.SerializeToString(), qos=1)
