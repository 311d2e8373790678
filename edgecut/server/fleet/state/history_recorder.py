"""Writes fleet events into `FleetHistory` on its own thread, and measures each new artifact's ORT latency.

An observer must return at once (it runs on paho's network thread or a build worker), so events are
queued and a single writer thread records them. The latency of a newly built artifact is measured the
way a device would see it: onnxruntime on the CPU, one thread, batch 1, the median of `latency_runs`
timed runs after the agent's own load-and-validate step (torch-free; the agent's `load_model`).
"""

from __future__ import annotations

import logging
import queue
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from edgecut.server.fleet.events import FleetEvent
from edgecut.server.fleet.state.history import FleetHistory
from edgecut.server.fleet.state.store import Store

logger = logging.getLogger(__name__)

MAX_PENDING = 10_000  # beyond this, telemetry samples are dropped rather than memory growing


class HistoryRecorder:
    def __init__(self, history: FleetHistory, store: Store, latency_runs: int = 20) -> None:
        self.history, self.store, self.latency_runs = history, store, latency_runs
        self._queue: queue.Queue[FleetEvent | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edgecut-history", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Record what is queued, then end the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def __call__(self, event: FleetEvent) -> None:
        if event.kind == "telemetry" and self._queue.qsize() > MAX_PENDING:
            self.dropped += 1
            return
        if event.kind in ("telemetry", "job", "refinement", "adaptation"):
            self._queue.put(event)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (tests and the dashboard's first page)."""
        done = threading.Event()
        self._queue.put(FleetEvent("_flush", data={"done": done}))
        return done.wait(timeout)

    def _run(self) -> None:
        while (event := self._queue.get()) is not None:
            try:
                self._record(event)
            except Exception:
                logger.exception("recording a %s event failed", event.kind)

    def _record(self, e: FleetEvent) -> None:
        d = e.data
        if e.kind == "_flush":
            d["done"].set()
        elif e.kind == "telemetry":
            self.history.add_telemetry(e.device_id, e.at, d)
        elif e.kind == "job":
            stage, key = d.get("stage"), str(d.get("build_key", ""))
            if d.get("source") == "cache":
                self.history.cache_hit(key)
            elif stage == "queued" and d.get("source") == "build":
                self.history.build_queued(key, list(d.get("tasks", [])), e.at)
            elif stage == "running":
                self.history.build_started(key, list(d.get("tasks", [])), e.at)
            elif stage == "ready" and not d.get("source"):
                self.history.build_finished(key, e.at, True, artifact_id=str(d.get("artifact_id", "")))
                self._measure(str(d.get("artifact_id", "")))
            elif stage == "failed":
                self.history.build_finished(key, e.at, False, error=str(d.get("error", "")))
        elif e.kind in ("refinement", "adaptation"):  # a row of its own in the builds table (K~rN, K~a...)
            stage, key = str(d.get("stage", "")), str(d.get("build_key", ""))
            if stage == "queued":
                self.history.build_queued(key, list(d.get("tasks", [])), e.at)
            elif stage == "running":
                self.history.build_started(key, list(d.get("tasks", [])), e.at)
            elif stage in ("ready", "adapted"):
                self.history.build_finished(key, e.at, True, artifact_id=str(d.get("artifact_id", "")))
                self._measure(str(d.get("artifact_id", "")))
            elif stage in ("failed", "not better", "stale", "unwanted", "not shipped"):
                self.history.build_finished(key, e.at, stage != "failed", result=stage)

    def _measure(self, artifact_id: str) -> None:
        if self.latency_runs < 1 or not artifact_id:
            return
        try:
            ms = artifact_latency_ms(self.store, artifact_id, self.latency_runs)
        except Exception as exc:  # an artifact a device would refuse: the dashboard says "not measured"
            logger.warning("could not time artifact %s on onnxruntime: %s", artifact_id[:12], exc)
            return
        self.history.set_latency(artifact_id, ms, self.latency_runs)
        logger.info("artifact %s: %.2f ms on onnxruntime (batch 1, 1 thread)", artifact_id[:12], ms)


def artifact_latency_ms(store: Store, artifact_id: str, runs: int) -> float:
    """Median onnxruntime CPU latency in ms of one batch-1 inference (1 thread), after warm-up."""
    from edgecut.agent.runtime import load_model  # onnxruntime; the agent's own validation

    with tempfile.TemporaryDirectory(prefix="edgecut-latency-") as tmp:
        path = Path(tmp) / "model.onnx"
        with store.open(artifact_id) as src, path.open("wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        model = load_model(path, artifact_id, threads=1)  # warms up and validates
        lo, hi = model.meta.input.value_range
        shape = [1 if d is None else d for d in model.meta.input.shape]
        image = np.random.default_rng(0).uniform(lo, hi, size=shape).astype(np.float32)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            model.run(image)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)
