"""Shared helpers for the agent's tests: place test models in an agent's model store, wait on an agent."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from edgecut.agent.artifacts import ModelStore

from .onnx_models import artifact_id

if TYPE_CHECKING:
    from edgecut.agent.agent import Agent

T = TypeVar("T")


def put(store: ModelStore, data: bytes) -> str:
    """Put verified bytes into the store as a downloaded artifact would be; returns the id."""
    aid = artifact_id(data)
    store.path(aid).write_bytes(data)
    return aid


def wait_until(pred: Callable[[], T | None], timeout: float = 15.0) -> T:
    """Poll `pred` until it returns something truthy (returned); AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)
    return value


def serving(agent: Agent) -> str:
    return agent.status().artifact_id


def wait_serving(agent: Agent, tasks: list[str], timeout: float = 15.0) -> str:
    """Wait until the agent serves a model made for exactly `tasks`; returns its artifact id."""
    wait_until(lambda: sorted(agent.status().model_tasks) == sorted(tasks), timeout)
    return serving(agent)
