"""Waiting on an agent process the project started (benches, the demo), never silently.

A wait ends early, with one sentence and the last lines of the agent's log, when:
- the agent process exits;
- its status reports a refused offer (a missing or wrong fleet key, a model that failed validation,
  a final error from the server) and no model replaced it within `refusal_grace_s` (a failed
  download retried in time clears it first);
- nothing moved for `stall_s`: no new log line, no change in its status, and no build running for
  it (`busy`).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from edgecut.v1 import agent_pb2

from .errors import AgentError

__all__ = ["AgentStalled", "AgentWatch", "log_tail", "refusal"]

REFUSAL_GRACE_S = 20.0
# server errors the agent asks again after (busy, overloaded): not a refusal
_TRANSIENT_SERVER = ("server: RATE_LIMITED", "server: QUEUE_FULL", "server: INTERNAL")


class AgentStalled(AgentError):
    """An agent the project started will not get where it was waiting for; the message says why."""


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


def refusal(status: agent_pb2.AgentStatus) -> str:
    """The reason the agent refused an offer or was refused by the server ('' when none)."""
    err = status.last_error
    if not err or err.startswith(_TRANSIENT_SERVER):
        return ""
    if err.startswith("server: "):
        return err
    # "model X refused: offer of X refused: signed by ...": the innermost reason says it all
    return err.rsplit(" refused: ", 1)[1] if " refused: " in err else ""


class AgentWatch:
    """Call `check(status)` in a wait loop; it raises AgentStalled when the wait cannot end well."""

    def __init__(
        self,
        name: str,
        proc: subprocess.Popen[bytes],
        log: Path,
        stall_s: float,
        busy: Callable[[], bool] = lambda: False,
        refusal_grace_s: float = REFUSAL_GRACE_S,
    ) -> None:
        self.name, self.proc, self.log, self.stall_s, self.busy = name, proc, log, stall_s, busy
        self.refusal_grace_s = min(refusal_grace_s, stall_s)
        self._seen: tuple[object, ...] = ()
        self._moved = time.monotonic()
        self._refused_at: float | None = None

    def check(self, status: agent_pb2.AgentStatus | None) -> None:
        now = time.monotonic()
        if self.proc.poll() is not None:
            self.fail(f"{self.name} exited with code {self.proc.returncode}")
        try:
            size = self.log.stat().st_size
        except OSError:
            size = -1
        seen = (size, status.SerializeToString(deterministic=True) if status is not None else b"")
        if seen != self._seen or self.busy():
            self._seen, self._moved = seen, now
        reason = refusal(status) if status is not None and not status.artifact_id else ""
        if not reason:
            self._refused_at = None
        elif self._refused_at is None:
            self._refused_at = now
        elif now - self._refused_at >= self.refusal_grace_s:
            self.fail(f"{self.name} refused the model offered to it: {reason}")
        if now - self._moved >= self.stall_s:
            what = f" (last error: {status.last_error})" if status is not None and status.last_error else ""
            self.fail(f"{self.name} made no progress for {self.stall_s:g} s{what}")

    def fail(self, sentence: str) -> None:
        """Raise AgentStalled: `sentence` and the agent's last log lines."""
        raise AgentStalled(f"{sentence}. Its last log lines ({self.log}):\n{log_tail(self.log)}")
