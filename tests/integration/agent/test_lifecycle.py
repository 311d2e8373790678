"""The agent's life cycle as it reports it (status, and telemetry read back from the server) while a real
fleet swaps its model, offers it a broken one, and loses its broker."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from edgecut.agent.agent import Agent
from edgecut.agent.lifecycle import State
from edgecut.agent.serve import AgentClient
from tests.support.agent_helpers import wait_serving, wait_until

pytestmark = pytest.mark.integration
IMG = np.random.default_rng(5).random((1, 3, 64, 64), dtype=np.float32)
SWAP = ["offered", "downloading", "verifying", "loading"]


@contextmanager
def watching(agent: Agent) -> Iterator[list[str]]:
    """The distinct states `agent.status()` reports, polled as fast as the local API answers."""
    seen: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        with AgentClient(agent.api_address) as client:
            while not stop.is_set():
                state = client.status().state
                if not seen or seen[-1] != state:
                    seen.append(state)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    try:
        yield seen
    finally:
        stop.set()
        t.join(10)


def walked(agent: Agent, since: int) -> list[str]:
    return [tr.target.value for tr in list(agent.life.history)[since:]]


def reported_by_telemetry(fleet, agent: Agent) -> str:  # type: ignore[no-untyped-def]
    return str((fleet.device(agent.device_id) or {}).get("telemetry", {}).get("state", ""))


def test_a_real_swap_is_reported_offered_to_serving(make_agent, fleet) -> None:
    agent = make_agent(tasks=["seg"])
    seg_id = wait_serving(agent, ["seg"])
    wait_until(lambda: agent.status().state == "serving")
    mark = len(agent.life.history)
    with watching(agent) as seen, AgentClient(agent.api_address) as client:
        client.set_tasks(["seg", "depth"])
        both_id = wait_serving(agent, ["seg", "depth"])
        wait_until(lambda: client.status().state == "serving")
    path = walked(agent, mark)
    # needs sent, answered, then the update, step by step, ending where the agent serves the new model
    i = path.index("offered")
    assert path[i : i + 5] == [*SWAP, "serving"], path
    assert path[:i] in (["needs"], ["needs", "serving"]), path
    assert set(seen) <= {"serving", "needs", *SWAP}, seen  # reported: no state outside the path
    st = agent.status()
    assert st.state == "serving" and st.illegal_transitions == 0 and both_id != seg_id
    assert both_id[:12] in st.state_reason and st.state_since_unix_ms >= agent.life.history[-1].at_unix_ms
    # the server keeps the latest sample: the state the agent swapped into, with its reason
    wait_until(
        lambda: (
            (fleet.device(agent.device_id) or {}).get("telemetry", {}).get("state_reason") == st.state_reason
        )
    )
    assert reported_by_telemetry(fleet, agent) == "AGENT_STATE_SERVING"


def test_a_model_that_fails_to_load_is_reported_rolled_back(make_agent, fleet) -> None:
    agent = make_agent(tasks=["seg"])
    seg_id = wait_serving(agent, ["seg"])
    mark = len(agent.life.history)
    fleet.engine.faults[("depth", "seg")] = "nan"  # the server's next seg+depth build comes out broken
    with AgentClient(agent.api_address) as client:
        client.set_tasks(["seg", "depth"])
        st = wait_until(lambda: (s := client.status()).state == "rolled_back" and s)
        assert st.artifact_id == seg_id and client.infer(IMG).artifact_id == seg_id  # the old one serves on
    assert "not finite" in st.state_reason and f"{seg_id[:12]} serves on" in st.state_reason
    path = walked(agent, mark)
    i = path.index("offered")
    assert path[i:] == [*SWAP, "rolled_back"], path
    wait_until(lambda: reported_by_telemetry(fleet, agent) == "AGENT_STATE_ROLLED_BACK")
    assert agent.life.illegal == 0


def test_broker_away_is_reported_offline_serving_and_back(make_agent, fleet, broker) -> None:
    # needs sent before the server's own link is back reach nobody: the agent reports `needs` until it
    # asks again (needs_retry_s) and is answered
    agent = make_agent(tasks=["seg"], needs_retry_s=1.0)
    seg_id = wait_serving(agent, ["seg"])
    wait_until(lambda: agent.status().state == "serving")
    broker.stop()
    with AgentClient(agent.api_address) as client:
        st = wait_until(lambda: (s := client.status()).state == "offline_serving" and s)
        assert st.state_reason == "lost the broker" and client.infer(IMG).artifact_id == seg_id
    broker.start()
    wait_until(lambda: agent.status().state == "serving")  # reconnected, needs sent and answered
    back = [tr.target for tr in agent.life.history]
    assert back[-3:] == [State.OFFLINE_SERVING, State.NEEDS, State.SERVING] and agent.life.illegal == 0
