"""Shared helpers for the agent's tests: place test models in an agent's model store, wait on an agent."""

from __future__ import annotations

from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt

from edgecut import topics
from edgecut.agent.artifacts import ModelStore
from edgecut.envelopes import now_ms, sign_manifest
from edgecut.v1 import fleet_pb2

from .keys import fleet_key
from .onnx_models import artifact_id
from .waiting import WAIT_S, wait_until

if TYPE_CHECKING:
    from edgecut.agent.agent import Agent


def signed_offer(
    data: bytes, device_id: str = "", needs_seq: int = 0, **fields: object
) -> fleet_pb2.ModelReady:
    """A ModelReady for `data` whose manifest the test fleet key signed (as the fleet server would)."""
    aid = artifact_id(data)
    fields.setdefault("offer_seq", now_ms())  # a fresh counter, as the fleet's registry would give
    manifest = fleet_pb2.Manifest(
        artifact_id=aid,
        sha256=aid,
        size_bytes=len(data),
        device_id=device_id,
        needs_seq=needs_seq,
        **fields,  # type: ignore[arg-type]
    )
    blob, sig = sign_manifest(fleet_key(), manifest)
    return fleet_pb2.ModelReady(
        device_id=device_id, artifact_id=aid, sha256=aid, size_bytes=len(data), manifest=blob, signature=sig
    )


def put(store: ModelStore, data: bytes) -> str:
    """Put verified bytes (and their signed offer) into the store as a download would; returns the id."""
    aid = artifact_id(data)
    store.path(aid).write_bytes(data)
    store.offer_path(aid).write_bytes(signed_offer(data).SerializeToString())
    return aid


def serving(agent: Agent) -> str:
    return agent.status().artifact_id


def wait_serving(agent: Agent, tasks: list[str], timeout: float = WAIT_S) -> str:
    """Wait until the agent serves a model made for exactly `tasks`; returns its artifact id."""
    wait_until(lambda: sorted(agent.status().model_tasks) == sorted(tasks), timeout)
    return serving(agent)


def publish_as(client: mqtt.Client, device_id: str, leaf: str, payload: bytes, retain: bool = False) -> None:
    """Publish on a device's topic, waiting until the broker has it."""
    client.publish(topics.device_topic(device_id, leaf), payload, qos=1, retain=retain).wait_for_publish(5)
