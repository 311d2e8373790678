"""AgentWatch: which agent states end a wait at once, and what the message says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgecut.agent import watch as watch_module
from edgecut.agent.watch import REFUSAL_GRACE_S, AgentStalled, AgentWatch, refusal
from edgecut.v1 import agent_pb2


@pytest.mark.parametrize(
    ("last_error", "reason"),
    [
        ("", ""),
        ("server: QUEUE_FULL: 40 builds queued", ""),  # busy: the agent asks again later
        ("server: UNKNOWN_TASK: no task 'flow'", "server: UNKNOWN_TASK: no task 'flow'"),
        (
            "model 63cad0ec1c67 refused: no fleet public key is configured (fleet_keys): every model offer is refused",
            "no fleet public key is configured (fleet_keys): every model offer is refused",
        ),
        (
            "model 63cad0ec1c67 refused: offer of 63cad0ec1c67 refused: signed by key 'ab'",
            "signed by key 'ab'",
        ),
    ],
)
def test_refusal_names_the_innermost_reason(last_error: str, reason: str) -> None:
    assert refusal(agent_pb2.AgentStatus(last_error=last_error)) == reason


def test_an_exited_agent_ends_the_wait_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    log.write_text("INFO starting\nERROR cannot bind 127.0.0.1:1: permission denied\n")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(AgentStalled) as caught:
        AgentWatch("the agent", proc, log, stall_s=600).check(None)
    first, *rest = str(caught.value).splitlines()
    assert first.startswith("the agent exited with code 3.") and rest[-1].startswith("ERROR cannot bind")


def test_a_refusal_ends_the_wait_only_once_it_lasted_the_grace(tmp_path: Path, monkeypatch) -> None:
    """A refusal cleared in time (a retried download) is forgiven; one that lasts REFUSAL_GRACE_S ends
    the wait naming it (tests/integration/bench/test_bench_arm64_agent.py runs this with a real agent)."""
    now = [1000.0]
    monkeypatch.setattr(watch_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    log = tmp_path / "agent.log"
    log.write_text("WARNING offer refused\n")
    proc = SimpleNamespace(poll=lambda: None)  # an agent still running
    refused = agent_pb2.AgentStatus(last_error="model 63 refused: offer of 63 refused: signed by key 'ab'")
    watch = AgentWatch("the agent", proc, log, stall_s=600)  # type: ignore[arg-type]
    watch.check(refused)
    now[0] += REFUSAL_GRACE_S - 1
    watch.check(agent_pb2.AgentStatus())  # cleared in time: the grace starts again at the next refusal
    watch.check(refused)
    now[0] += REFUSAL_GRACE_S - 1
    watch.check(refused)  # refused for less than the grace
    now[0] += 1
    with pytest.raises(AgentStalled) as caught:
        watch.check(refused)
    assert str(caught.value).startswith("the agent refused the model offered to it: signed by key 'ab'.")
