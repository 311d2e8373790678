"""Ask again while nobody answers: the needs are re-sent until an offer or an error for them arrives.

Needs are not retained (shared subscriptions never get retained messages), so needs published while
no server was subscribed — a server restarting, a broker that lost its state — reach nobody. The
agent re-publishes them after `first_s`, doubling up to `max_s`, until the answer comes; the server
treats a repeat of the same seq as the same request (single flight, cache hit).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class NeedsWatchdog:
    def __init__(self, publish: Callable[[], None], first_s: float = 30.0, max_s: float = 300.0) -> None:
        self.publish, self.first_s, self.max_s = publish, first_s, max_s
        self._lock = threading.Lock()
        self._pending: int | None = None  # the seq waiting for an answer
        self._due = 0.0
        self._interval = first_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="needs-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)

    def sent(self, seq: int) -> None:
        with self._lock:
            if self._pending != seq:
                self._interval = self.first_s
            self._pending, self._due = seq, time.monotonic() + self._interval

    @property
    def pending(self) -> bool:
        """Needs were sent and nothing answered them yet."""
        with self._lock:
            return self._pending is not None

    def answered(self, seq: int) -> None:
        with self._lock:
            if self._pending == seq:
                self._pending = None

    def _run(self) -> None:
        while not self._stop.wait(min(1.0, self.first_s)):
            with self._lock:
                due = self._pending is not None and time.monotonic() >= self._due
                if due:
                    self._interval = min(self._interval * 2, self.max_s)
            if due:
                logger.info("no answer to needs seq %s yet: asking again", self._pending)
                try:
                    self.publish()  # calls sent(), which schedules the next one
                except Exception:
                    logger.exception("re-sending the needs failed")


class RetryTimer:
    """One pending retry at a time, on a doubling delay from `first_s` to `max_s`; never gives up.

    `schedule(arg)` arms it (replacing a pending one), `fire()` runs a pending retry at once (after a
    reconnect), `reset()` disarms it and starts the delays over (after a success).
    """

    def __init__(self, action: Callable[[bool], None], first_s: float, max_s: float) -> None:
        self.action, self.first_s, self.max_s = action, first_s, max_s
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._delay = first_s

    @property
    def pending(self) -> bool:
        with self._lock:
            return self._timer is not None

    def schedule(self, arg: bool) -> float:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            delay, self._delay = self._delay, min(self._delay * 2, self.max_s)
            self._timer = threading.Timer(delay, self._run, args=(arg,))
            self._timer.daemon = True
            self._timer.start()
        return delay

    def _run(self, arg: bool) -> None:
        with self._lock:
            self._timer = None
        self.action(arg)

    def fire(self, arg: bool = False) -> None:
        """Run a pending retry now (nothing when none is pending)."""
        with self._lock:
            if self._timer is None:
                return
            self._timer.cancel()
            self._timer = None
        self.action(arg)

    def reset(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._delay = self.first_s
