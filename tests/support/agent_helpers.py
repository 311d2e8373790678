"""Shared helpers for the agent's tests: place test models in an agent's model store."""

from __future__ import annotations

from edgecut.agent.artifacts import ModelStore

from .onnx_models import artifact_id


def put(store: ModelStore, data: bytes) -> str:
    """Put verified bytes into the store as a downloaded artifact would be; returns the id."""
    aid = artifact_id(data)
    store.path(aid).write_bytes(data)
    return aid
