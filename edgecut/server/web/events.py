"""Live updates for the dashboard: fleet events to Server-Sent Events, and the latest progress of each build.

`EventHub` is a fleet observer (called on service threads) that hands each event to every connected
browser's asyncio queue through the event loop's thread-safe call. A browser gets small notices
(kind, device id, a few fields), not whole records: the page then fetches what it shows from the
same JSON API or page it was rendered from, so there is one source of truth. Telemetry notices are
coalesced per device (at most one per `TELEMETRY_EVERY_S`), so a big fleet cannot flood a browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from edgecut.server.fleet.events import FleetEvent

KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies from closing an idle stream
TELEMETRY_EVERY_S = 1.0
CLIENT_QUEUE = 1000  # notices a slow browser may lag behind before it is dropped (it reconnects)
# the stages a build or a refinement ends in (refiner.py: not better, stale, unwanted)
FINISHED = frozenset({"ready", "failed", "not better", "stale", "unwanted"})
_NOTICE_FIELDS = ("stage", "fraction", "state", "status", "artifact_id", "ok", "result", "action", "id")


class EventHub:
    def __init__(self) -> None:
        self._clients: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[str | None]]] = set()
        self._lock = threading.Lock()
        self._last_telemetry: dict[str, float] = {}
        self._closed = False
        self.jobs: dict[str, dict[str, Any]] = {}  # build key -> latest stage, fraction, detail

    def __call__(self, e: FleetEvent) -> None:
        if e.kind in ("job", "refinement"):
            self._track_job(e)
        if e.kind == "telemetry":
            last = self._last_telemetry.get(e.device_id, 0.0)
            if e.at - last < TELEMETRY_EVERY_S:
                return
            self._last_telemetry[e.device_id] = e.at
        notice = {"kind": e.kind, "device_id": e.device_id, "at": e.at}
        notice.update({k: e.data[k] for k in _NOTICE_FIELDS if k in e.data})
        self.publish(e.kind, notice)

    def _track_job(self, e: FleetEvent) -> None:
        key, stage = str(e.data.get("build_key", "")), str(e.data.get("stage", ""))
        if e.data.get("source") in ("cache", "joined", "repeat"):
            return
        with self._lock:
            if stage in FINISHED:
                self.jobs.pop(key, None)
            else:
                self.jobs[key] = {
                    "stage": stage,
                    "fraction": float(e.data.get("fraction", 0.0)),
                    "detail": str(e.data.get("detail", "")),
                    "at": e.at,
                }

    def job_progress(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return dict(self.jobs[key]) if key in self.jobs else None

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        frame = f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"
        with self._lock:
            clients = list(self._clients)
        for loop, q in clients:
            loop.call_soon_threadsafe(_offer, q, frame)

    async def stream(self) -> AsyncIterator[str]:
        """SSE frames for one browser until it goes away or the hub closes."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[str | None] = asyncio.Queue(CLIENT_QUEUE)
        client = (loop, q)
        with self._lock:
            if self._closed:
                return
            self._clients.add(client)
        try:
            yield f"retry: 2000\nevent: hello\ndata: {json.dumps({'at': time.time()})}\n\n"
            while True:
                try:
                    frame = await asyncio.wait_for(q.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if frame is None:
                    return
                yield frame
        finally:
            with self._lock:
                self._clients.discard(client)

    def close(self) -> None:
        """End every open stream (the HTTP server can then stop without waiting for browsers)."""
        with self._lock:
            self._closed = True
            clients = list(self._clients)
        for loop, q in clients:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(_offer, q, None)

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._clients)


def _offer(q: asyncio.Queue[str | None], frame: str | None) -> None:
    try:
        q.put_nowait(frame)
    except asyncio.QueueFull:  # a stalled browser: drop it; EventSource reconnects by itself
        while not q.empty():
            q.get_nowait()
        q.put_nowait(None)
