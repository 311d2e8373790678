"""The agent's life cycle as an explicit state machine: the states, the allowed transitions, one mover.

Two kinds of state (drawn in docs/protocol.md, which a test keeps equal to TRANSITIONS):
- at rest, the agent *settles* in the state its facts say (`Lifecycle.settle`): `pinned` (an operator
  pin holds the serving model), `waiting_for_broker` / `offline_serving` (broker away, without / with a
  model), `needs` (needs sent and unanswered, or no model yet), `serving`; and `rolled_back`, where a
  failed update leaves it (the model served before, if any, serves on) until the next event;
- an update walks `offered` (a signed offer, verified on arrival, taken by the worker) -> `downloading`
  -> `verifying` (sha256 and the kept signed offer checked against the file) -> `loading` (loaded,
  warmed up and validated beside the serving model; the swap) -> a rest state, or -> `rolled_back`.

Threads: only the agent's worker thread enters the update states (downloads, loads, rollbacks and pins
all run there, one at a time); the MQTT and API threads only settle, which does nothing while an update
runs. So a transition outside the table is a bug: it is refused (the state stays), logged at ERROR and
counted in `illegal`, and the agent serves on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import cast

from edgecut.v1 import fleet_pb2

__all__ = ["REST", "TRANSITIONS", "UPDATE", "Lifecycle", "Snapshot", "State", "Transition"]

logger = logging.getLogger(__name__)

MAX_REASON = 300  # characters of a transition's reason kept (status and telemetry carry it)
HISTORY = 64


class State(Enum):
    STARTING = "starting"
    WAITING_FOR_BROKER = "waiting_for_broker"
    NEEDS = "needs"
    OFFERED = "offered"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    LOADING = "loading"
    SERVING = "serving"
    OFFLINE_SERVING = "offline_serving"
    ROLLED_BACK = "rolled_back"
    PINNED = "pinned"

    def to_proto(self) -> fleet_pb2.AgentState:
        """The wire value (fleet.proto's AgentState: AGENT_STATE_<NAME>)."""
        return cast(fleet_pb2.AgentState, fleet_pb2.AgentState.Value(f"AGENT_STATE_{self.name}"))


S = State
REST = frozenset({S.WAITING_FOR_BROKER, S.NEEDS, S.SERVING, S.OFFLINE_SERVING, S.PINNED, S.ROLLED_BACK})
UPDATE = frozenset({S.OFFERED, S.DOWNLOADING, S.VERIFYING, S.LOADING})

# from -> the states it may go to. OFFERED is never entered from PINNED: a pinned agent takes no offer.
# VERIFYING from a rest state is an operator rollback (the previous model is checked again before it
# loads); LOADING -> VERIFYING is the start-up restore trying the previous model after the current failed.
TRANSITIONS: dict[State, frozenset[State]] = {
    S.STARTING: frozenset({S.VERIFYING, S.WAITING_FOR_BROKER}),
    S.WAITING_FOR_BROKER: frozenset({S.NEEDS, S.OFFERED, S.VERIFYING}),
    S.NEEDS: frozenset(
        {S.SERVING, S.OFFLINE_SERVING, S.WAITING_FOR_BROKER, S.PINNED, S.OFFERED, S.VERIFYING}
    ),
    S.SERVING: frozenset({S.NEEDS, S.OFFLINE_SERVING, S.PINNED, S.OFFERED, S.VERIFYING}),
    S.OFFLINE_SERVING: frozenset({S.SERVING, S.NEEDS, S.PINNED, S.OFFERED, S.VERIFYING}),
    S.PINNED: frozenset({S.SERVING, S.NEEDS, S.OFFLINE_SERVING, S.VERIFYING}),
    S.ROLLED_BACK: frozenset(
        {S.SERVING, S.NEEDS, S.OFFLINE_SERVING, S.WAITING_FOR_BROKER, S.PINNED, S.OFFERED, S.VERIFYING}
    ),
    S.OFFERED: frozenset({S.DOWNLOADING, S.ROLLED_BACK}),
    S.DOWNLOADING: frozenset({S.VERIFYING, S.ROLLED_BACK}),
    S.VERIFYING: frozenset({S.LOADING, S.ROLLED_BACK}),
    S.LOADING: frozenset({S.SERVING, S.OFFLINE_SERVING, S.NEEDS, S.PINNED, S.VERIFYING, S.ROLLED_BACK}),
}


@dataclass(frozen=True)
class Transition:
    source: State
    target: State
    reason: str
    at_unix_ms: int


@dataclass(frozen=True)
class Snapshot:
    """What status and telemetry report: the state, since when (Unix ms), and why it was entered."""

    state: State
    since_unix_ms: int
    reason: str


def _now_ms() -> int:
    return int(time.time() * 1000)


class Lifecycle:
    """The current state; `move` performs one transition of the table, `settle` picks the rest state.

    `rest` tells, from the agent's facts, which rest state it is in (pinned? broker? model? needs?).
    """

    def __init__(self, rest: Callable[[], State], clock: Callable[[], int] = _now_ms) -> None:
        self._rest, self._clock = rest, clock
        self._lock = threading.Lock()
        self._state = State.STARTING
        self._since = clock()
        self._reason = "agent starting"
        self.illegal = 0  # refused transitions: each one a bug
        self.history: deque[Transition] = deque(maxlen=HISTORY)

    @property
    def state(self) -> State:
        return self._state

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(self._state, self._since, self._reason)

    def move(self, target: State, reason: str) -> bool:
        """Go to `target` (True), stay when already there (False), refuse one outside the table (False)."""
        with self._lock:
            return self._move(target, reason)

    def settle(self, reason: str, *, ending_update: bool = False) -> bool:
        """Go to the rest state the facts say. From another thread than the worker (`ending_update`
        False) only while at rest: an update in progress ends by itself and then settles."""
        with self._lock:
            if not ending_update and self._state not in REST and self._state is not State.STARTING:
                return False
            return self._move(self._rest(), reason)

    def _move(self, target: State, reason: str) -> bool:
        source = self._state
        if target is source:
            return False
        reason = reason[:MAX_REASON]
        if target not in TRANSITIONS[source]:
            self.illegal += 1
            logger.error(
                "illegal life-cycle transition %s -> %s (%s) refused, staying %s: a bug (%d so far)",
                source.value,
                target.value,
                reason,
                source.value,
                self.illegal,
            )
            return False
        self._state, self._since, self._reason = target, self._clock(), reason
        self.history.append(Transition(source, target, reason, self._since))
        logger.info("life cycle: %s -> %s (%s)", source.value, target.value, reason)
        return True
