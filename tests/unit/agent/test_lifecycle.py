"""The agent's life-cycle table: every legal transition works, every other is refused (logged, counted,
never raised), settling follows the facts, and docs/protocol.md draws exactly this table."""

from __future__ import annotations

import logging
import re
from collections import deque
from itertools import product
from pathlib import Path

import pytest

from edgecut.agent.lifecycle import REST, TRANSITIONS, UPDATE, Lifecycle, State
from edgecut.v1 import fleet_pb2

DOC = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"


def path_to(target: State) -> list[State]:
    """The shortest walk of legal transitions from `starting` to `target`."""
    seen = {State.STARTING: [State.STARTING]}
    todo = deque([State.STARTING])
    while todo:
        s = todo.popleft()
        for t in TRANSITIONS[s]:
            if t not in seen:
                seen[t] = [*seen[s], t]
                todo.append(t)
    return seen[target]


def machine_in(state: State, rest: State = State.SERVING) -> Lifecycle:
    life = Lifecycle(lambda: rest)
    for step in path_to(state)[1:]:
        assert life.move(step, "walking there")
    assert life.state is state and life.illegal == 0
    return life


def test_every_state_is_reachable_and_can_come_back_to_rest() -> None:
    assert set(TRANSITIONS) == set(State)
    for state in State:
        assert path_to(state)[0] is State.STARTING
        # from every state some walk ends at rest: nothing gets stuck mid-update
        seen, todo = {state}, [state]
        while todo:
            for t in TRANSITIONS[todo.pop()] - seen:
                seen.add(t)
                todo.append(t)
        assert seen & REST, state


@pytest.mark.parametrize(
    ("source", "target"), [(s, t) for s in State for t in sorted(TRANSITIONS[s], key=lambda x: x.value)]
)
def test_every_legal_transition_is_performed_logged_and_kept(
    source: State, target: State, caplog: pytest.LogCaptureFixture
) -> None:
    life = machine_in(source)
    caplog.set_level(logging.INFO, "edgecut.agent.lifecycle")
    assert life.move(target, "because " + "x" * 400)
    snap = life.snapshot()
    assert snap.state is target and len(snap.reason) == 300 and snap.reason.startswith("because")
    assert life.history[-1].source is source and life.history[-1].target is target
    (line,) = [r for r in caplog.records if r.levelno == logging.INFO]
    assert f"{source.value} -> {target.value} (because" in line.getMessage()


@pytest.mark.parametrize(
    ("source", "target"), [(s, t) for s, t in product(State, State) if s is not t and t not in TRANSITIONS[s]]
)
def test_every_illegal_transition_is_refused_loudly_without_raising(
    source: State, target: State, caplog: pytest.LogCaptureFixture
) -> None:
    life = machine_in(source)
    before = life.snapshot()
    assert not life.move(target, "a bug")
    assert life.snapshot() == before and life.illegal == 1
    (err,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert f"{source.value} -> {target.value}" in err.getMessage() and "a bug" in err.getMessage()


def test_the_tables_promises() -> None:
    assert State.OFFERED not in TRANSITIONS[State.PINNED]  # a pinned agent takes no offer
    assert not any(State.ROLLED_BACK in TRANSITIONS[s] for s in REST)  # only a failed update rolls back
    for s in UPDATE:
        assert State.ROLLED_BACK in TRANSITIONS[s]  # every update step can fail and fall back


def test_moving_to_the_current_state_is_no_transition() -> None:
    life = machine_in(State.SERVING)
    n = len(life.history)
    assert not life.move(State.SERVING, "again")
    assert len(life.history) == n and life.illegal == 0


def test_settle_follows_the_facts_at_rest_and_waits_for_an_update_to_end() -> None:
    facts = {"rest": State.SERVING}
    life = Lifecycle(lambda: facts["rest"])
    assert life.settle("started", ending_update=True) is False  # starting -> serving is not in the table
    assert life.state is State.STARTING and life.illegal == 1
    facts["rest"] = State.WAITING_FOR_BROKER
    assert life.settle("nothing on disk") and life.state is State.WAITING_FOR_BROKER
    facts["rest"] = State.NEEDS
    assert life.settle("broker connected") and life.state is State.NEEDS
    assert not life.settle("needs sent again")  # already there
    life.move(State.OFFERED, "offer taken")
    facts["rest"] = State.OFFLINE_SERVING
    assert not life.settle("lost the broker") and life.state is State.OFFERED  # the update goes on
    life.move(State.DOWNLOADING, "fetching")
    life.move(State.VERIFYING, "checking")
    life.move(State.LOADING, "loading")
    assert life.settle("now serving", ending_update=True) and life.state is State.OFFLINE_SERVING
    assert life.snapshot().reason == "now serving" and life.illegal == 1


def test_every_state_has_its_wire_value_and_every_wire_value_a_state() -> None:
    wire = set(fleet_pb2.AgentState.DESCRIPTOR.values_by_name) - {"AGENT_STATE_UNSPECIFIED"}
    assert wire == {f"AGENT_STATE_{s.name}" for s in State}
    assert len({s.to_proto() for s in State}) == len(State) and 0 not in {s.to_proto() for s in State}


def test_the_diagram_in_protocol_md_is_exactly_the_table() -> None:
    text = DOC.read_text()
    blocks = re.findall(r"```mermaid\n(stateDiagram-v2\n.*?)```", text, re.S)
    assert len(blocks) == 1, "docs/protocol.md should hold one stateDiagram-v2"
    edges = set()
    for line in blocks[0].splitlines()[1:]:
        m = re.fullmatch(r"\s*(\[\*\]|\w+) --> (\w+)(?: : .*)?", line)
        assert m, f"unexpected line in the diagram: {line!r}"
        edges.add((m[1], m[2]))
    assert ("[*]", State.STARTING.value) in edges
    edges.discard(("[*]", State.STARTING.value))
    table = {(s.value, t.value) for s in State for t in TRANSITIONS[s]}
    assert edges - table == set(), "the diagram draws transitions the table refuses"
    assert table - edges == set(), "the diagram misses transitions of the table"


def test_agent_status_prints_the_state_since_when_and_why(capsys: pytest.CaptureFixture[str]) -> None:
    from edgecut.agent.cli import _print_status
    from edgecut.v1 import agent_pb2

    st = agent_pb2.AgentStatus(
        device_id="pi",
        state="rolled_back",
        state_since_unix_ms=1_800_000_000_000,
        state_reason="abc refused: NaN",
    )
    _print_status(st)
    out = capsys.readouterr().out
    assert re.search(
        r"^state +rolled_back since 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d: abc refused: NaN$", out, re.M
    )
    assert "BUG" not in out
    _print_status(agent_pb2.AgentStatus(device_id="pi", state="serving", illegal_transitions=2))
    assert "2 illegal life-cycle transitions" in capsys.readouterr().out
