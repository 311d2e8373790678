"""Answers to devices over MQTT: a signed, retained `ModelReady` per offer, an `Error` for a failed build.

A finished build answers every device waiting for it (persisted waiters, so also after a restart),
through the offer gate (the staged rollout: new variants reach canaries first). A refinement is
offered to the devices whose latest offer is its parent (refinements that keep the architecture pass
the gate). `offer` itself is ungated: the rollout calls it for promotions and rollbacks.
A model `held` below the quick model's quality floor (jobs/quality_floor.py) is offered to no one:
each device asking for it keeps its model, waits for the key (its refinement that passes is offered
then) and is told why (an `Error` about "waiting", its last error in the registry, a `held` event).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from edgecut import topics
from edgecut.envelopes import now_ms
from edgecut.errors import EdgecutError
from edgecut.server.errors import TooLargeError
from edgecut.server.fleet import error_map
from edgecut.server.fleet.jobs.outcomes import Failed, Outcome, Ready
from edgecut.server.fleet.jobs.rollout_policy import keeps_architecture
from edgecut.server.fleet.link import wire
from edgecut.server.fleet.link.signer import FleetSigner
from edgecut.server.fleet.link.variants import statistics_for, variants_for
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.store import Store
from edgecut.v1 import fleet_pb2 as pb

logger = logging.getLogger(__name__)

WAITING = "waiting"  # Error.about: no model yet, the device keeps its own (agent.py says so)

# (device id, needs seq, the build that answers it) -> the build to offer instead, or None to offer
# nothing now. The staged rollout (jobs/rollout.py) is one: it holds a new variant back from all but
# the canaries of a device class.
OfferGate = Callable[[str, int, Ready], "Ready | None"]


class Link(Protocol):
    """What delivery needs of the MQTT bridge."""

    def publish(self, topic: str, payload: bytes, retain: bool) -> None: ...

    def publish_error(self, err: pb.Error) -> None: ...

    def emit(self, kind: str, device: str, **data: Any) -> None: ...


class Delivery:
    def __init__(
        self, link: Link, registry: Registry, store: Store, signer: FleetSigner, grpc_address: str
    ) -> None:
        self.link, self.registry, self.store = link, registry, store
        self.signer, self.grpc_address = signer, grpc_address
        self.offer_gate: OfferGate | None = None
        # True = hold a refinement's offers back (a staged rollout judges its key's quick model now)
        self.refinement_hold: Callable[[Ready], bool] | None = None
        # issue 31: what a device running a model adapted to its statistics gets in place of a plain model
        # of its key (jobs/adapter.py `instead`): its adapted model, or None while that is being built
        self.adapted: Callable[[str, Ready], Ready | None] | None = None

    def on_job_finished(self, outcome: Outcome) -> None:
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
                self.answer(w.device_id, w.needs_seq, outcome)
            elif isinstance(outcome, Failed):
                self.registry.devices.record_error(w.device_id, outcome.message)
                self.link.publish_error(wire.error(outcome, w.device_id, w.needs_seq))

    def on_refined(self, ready: Ready) -> None:
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
            same = keeps_architecture(ready.artifact.meta, self.store.meta(ready.parent_artifact_id))
        except EdgecutError:  # the parent is gone from the store: judge it as a new variant
            same = False
        for device_id, seq in self.registry.offers.devices_on(ready.parent_artifact_id):
            if same:
                self.offer(device_id, seq, ready)
            else:
                self.answer(device_id, seq, ready)
        self.on_job_finished(ready)  # devices whose quick model was held wait for the key

    def answer(self, device_id: str, seq: int, ready: Ready) -> None:
        """Answer a device's needs with `ready`, or with what the offer gate puts in its place."""
        if ready.held:
            self._hold(device_id, seq, ready)
            return
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

    def offer_adapted(self, device_id: str, ready: Ready) -> None:
        """Offer a model adapted to the device's statistics (jobs/adapter.py) against its current needs.

        Like a refinement that keeps its parent's architecture, it passes the rollout gate (same MACs,
        inputs and outputs; checked on the validation set), and the agent's proxy check judges it."""
        dev = self.registry.devices.get(device_id)
        if dev is None:
            return
        self.offer(device_id, int(dev["needs_seq"]), ready)

    def _hold(self, device_id: str, seq: int, ready: Ready) -> None:
        """Offer nothing now: the device keeps its model and waits for the key's next model."""
        self.registry.waiters.add(ready.build_key, device_id, seq)
        self.registry.devices.record_error(device_id, ready.held)
        self.link.publish_error(
            pb.Error(message=ready.held, device_id=device_id, needs_seq=seq, about=WAITING)
        )
        logger.info("not offering %s to %s: %s", ready.artifact.artifact_id[:12], device_id, ready.held)
        self.link.emit(
            "held",
            device_id,
            artifact_id=ready.artifact.artifact_id,
            build_key=ready.build_key,
            needs_seq=seq,
            refinement=ready.refinement,
            reason=ready.held,
        )

    def offer(self, device_id: str, seq: int, ready: Ready, held: bool = False) -> None:
        """Publish a retained ModelReady for `ready` to the device (no gate: rollouts call this).

        A device that runs a model adapted to its statistics (issue 31) is never offered a plain model of
        its key over it: the adapted one of that same model, or nothing while the new model is adapted."""
        if not ready.adapted_from_sequence and self.adapted is not None:
            chosen = self.adapted(device_id, ready)
            if chosen is None:
                logger.info(
                    "not offering %s to %s: its adapted model stays until this one is adapted too",
                    ready.artifact.artifact_id[:12],
                    device_id,
                )
                return
            ready = chosen
        offer_seq = self.registry.offers.next_seq(device_id, now_ms())
        variants = variants_for(self.store, self.registry, ready.artifact, device_id)
        stats = statistics_for(self.store, self.registry, ready.artifact)
        msg, manifest = self.signer.offer(
            ready, self.grpc_address, device_id, seq, offer_seq, variants, stats
        )
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
            self.link.publish_error(
                error_map.to_error(TooLargeError("the model offer exceeds the broker limit"), device_id, seq)
            )
            return
        self.registry.offers.record(
            device_id,
            ready.build_key,
            msg.artifact_id,
            seq,
            wire.to_dict(manifest),
            [v.artifact_id for v in variants] + ([stats.artifact_id] if stats else []),
        )
        self.link.publish(topics.device_topic(device_id, topics.MODEL), payload, True)
        logger.info(
            "offered %s to %s (cache hit: %s, refinement %d%s)",
            msg.artifact_id[:12],
            device_id,
            ready.cache_hit,
            ready.refinement,
            "".join(f", {v.meta.precision} variant {v.artifact_id[:12]}" for v in variants)
            + (f", statistics companion {stats.artifact_id[:12]}" if stats else ""),
        )
        self.link.emit(
            "offer",
            device_id,
            artifact_id=msg.artifact_id,
            build_key=ready.build_key,
            needs_seq=seq,
            cache_hit=ready.cache_hit,
            held=held,
            refinement=ready.refinement,
            parent_artifact_id=ready.parent_artifact_id,
            variants={v.meta.precision: v.artifact_id for v in variants},
            statistics=stats.artifact_id if stats else "",
            adapted_from_sequence=ready.adapted_from_sequence,
        )
