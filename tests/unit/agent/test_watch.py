"""AgentWatch: which agent states end a wait at once, and what the message says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgecut.agent.watch import AgentStalled, AgentWatch, refusal
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
