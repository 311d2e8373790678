"""Shared helpers for the agent's tests: place test models in an agent's model store, wait on an agent."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecut.agent.artifacts import ModelStore

from .onnx_models import artifact_id
from .waiting import WAIT_S, wait_until

if TYPE_CHECKING:
    from edgecut.agent.agent import Agent


def put(store: ModelStore, data: bytes) -> str:
    """Put verified bytes into the store as a downloaded artifact would be; returns the id."""
    aid = artifact_id(data)
    store.path(aid).write_bytes(data)
    return aid


def serving(agent: Agent) -> str:
    return agent.status().artifact_id


def wait_serving(agent: Agent, tasks: list[str], timeout: float = WAIT_S) -> str:
    """Wait until the agent serves a model made for exactly `tasks`; returns its artifact id."""
    wait_until(lambda: sorted(agent.status().model_tasks) == sorted(tasks), timeout)
    return serving(agent)
