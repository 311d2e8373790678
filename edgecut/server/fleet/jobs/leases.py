"""The leases this replica holds, shared by its build, refine and adapt workers (builder.py, refiner.py,
adapter.py), and the claim loop's step they share (`next_job`).

A worker `hold`s a key while it builds it (the job manager's watcher renews those leases), `let_go`es
it when done, and checks `should_stop(key)` at each progress call: the server is stopping, or the
watcher found the lease `lose`t to another replica (the job was taken over).
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import Callable

from edgecut.server.fleet.state.jobs import BUILD, JobRecord, Jobs

logger = logging.getLogger(__name__)


def default_owner() -> str:
    """A replica id unique per process: host name + random suffix."""
    return f"{socket.gethostname()[:80]}-{uuid.uuid4().hex[:8]}"


class Leases:
    def __init__(
        self, owner: str = "", lease_s: float = 30.0, poll_s: float = 1.0, max_crashes: int = 3
    ) -> None:
        if lease_s <= 0 or poll_s <= 0:
            raise ValueError("lease_s and poll_s must be positive")
        self.owner = owner or default_owner()  # this replica's name on the leases it holds
        self.lease_s, self.poll_s = lease_s, poll_s
        self.max_crashes = max_crashes  # 0 = no cap
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._building: set[str] = set()  # keys whose lease this replica holds
        self._lost: set[str] = set()  # keys whose lease expired under us: stop building them

    def hold(self, key: str) -> None:
        """This replica builds `key` now: its lease is renewed until `let_go(key)`."""
        with self._lock:
            self._building.add(key)
            self._lost.discard(key)

    def let_go(self, key: str) -> bool:
        """Stop renewing `key`'s lease; True when it was lost to another replica meanwhile."""
        with self._lock:
            self._building.discard(key)
            return key in self._lost

    def lose(self, key: str) -> None:
        """`key`'s lease is gone (another claim holds the job): stop building it."""
        with self._lock:
            self._lost.add(key)

    def held(self) -> list[str]:
        """The keys this replica builds now (their leases to renew)."""
        with self._lock:
            return sorted(self._building)

    def should_stop(self, key: str) -> bool:
        return self.stop_event.is_set() or key in self._lost

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()


def next_job(
    leases: Leases,
    jobs: Jobs,
    wake: threading.Event,
    kind: str = BUILD,
    what: str = "a job",
    busy: Callable[[], bool] = lambda: False,
) -> JobRecord | None:
    """One step of a worker's loop: a claimed job of `kind` (or one the crash cap failed), else None
    after waiting up to `poll_s` for `wake` (set when work is queued here). A claim that raises (a
    database outage) is logged and tried again: it must not end the worker. `busy`: claim nothing now."""
    rec = None
    if not busy():
        try:
            rec = jobs.claim(leases.owner, leases.lease_s, kind=kind, max_crashes=leases.max_crashes)
        except Exception:
            logger.exception("claiming %s failed; retrying in %.1f s", what, leases.poll_s)
    if rec is None:
        wake.wait(leases.poll_s)
        wake.clear()
    return rec
