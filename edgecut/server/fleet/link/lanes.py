"""Ordered lanes: device messages handled off the MQTT client's thread, each device's in arrival order.

paho calls `on_message` on its one network thread. Handling a needs message takes several database
transactions; one at a time, a replica on PostgreSQL answered about 16 needs a second (1,000 devices,
2 replicas: `edgecut bench fleet`, docs/reliability.md). Lanes let those round trips overlap while a
device's own messages (needs seq 3 then 4, a swap after its needs) keep their order: a device always
maps to the same single-thread lane. A bounded number of waiting messages blocks the network thread,
so a flood slows the broker's delivery instead of growing memory.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class Lanes:
    def __init__(self, count: int, max_waiting: int = 1000, name: str = "edgecut-lane") -> None:
        if count < 1:
            raise ValueError("lanes need a count of at least 1")
        self._lanes = [ThreadPoolExecutor(1, thread_name_prefix=f"{name}-{i}") for i in range(count)]
        self._room = threading.BoundedSemaphore(max_waiting)
        self._stopped = False

    def submit(self, key: str, fn: Callable[..., Any], *args: Any) -> bool:
        """Run `fn(*args)` after every earlier call with the same key; False once stopped.

        `fn` must not raise (its exception would be lost in the executor): callers wrap their handlers.
        """
        self._room.acquire()
        if self._stopped:
            self._room.release()
            return False
        lane = self._lanes[zlib.crc32(key.encode()) % len(self._lanes)]
        try:
            lane.submit(self._run, fn, args)
        except RuntimeError:  # shut down between the check and the submit
            self._room.release()
            return False
        return True

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        finally:
            self._room.release()

    def stop(self, wait: bool = True) -> None:
        """Finish what is queued (wait=True) or drop it; later submits are refused."""
        self._stopped = True
        for lane in self._lanes:
            lane.shutdown(wait=wait, cancel_futures=not wait)
