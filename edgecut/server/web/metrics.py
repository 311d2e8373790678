"""Prometheus metrics of one fleet server, fed by fleet events and read at scrape time from the registry.

Naming follows Prometheus's conventions: `edgecut_` prefix, snake_case, base units in the name
(`_seconds`, `_bytes`), counters end in `_total`, and labels have a handful of values each (device
class, result, source, state; never a device id or a build key). Each server has its own
`CollectorRegistry`, so several servers in one process (the tests) do not collide.

| metric | type | labels |
|---|---|---|
| `edgecut_devices_online` / `edgecut_devices_known` | gauge | `device_class` |
| `edgecut_needs_received_total` | counter | `result` = accepted, refused |
| `edgecut_build_requests_total` | counter | `source` = build, cache, joined, repeat |
| `edgecut_build_cache_hit_ratio` | gauge | (cache / (cache + build) since start) |
| `edgecut_builds_started_total` | counter | |
| `edgecut_builds_total` | counter | `result` = done, failed |
| `edgecut_build_seconds` | histogram | |
| `edgecut_downloads_total` | counter | `result` = complete, partial |
| `edgecut_download_bytes_total` | counter | |
| `edgecut_swaps_total` | counter | `result` = ok, failed |
| `edgecut_rollbacks_total` | counter | `reason` = operator, rollout |
| `edgecut_operator_commands_total` | counter | `action`, `result` = sent, ok, failed |
| `edgecut_rollouts` | gauge | `state` |
| `edgecut_stats_summaries_total` | counter | `result` = taken, or why it was dropped (link/summaries.py) |
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from edgecut.server.fleet.events import FleetEvent
from edgecut.server.fleet.link.summaries import REASONS, TAKEN

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# builds take seconds (test engine) to an hour (a big model with recovery on a small CPU)
BUILD_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 2400, 3600, float("inf"))

ClassCounts = Callable[[], Mapping[str, tuple[int, int]]]  # device class -> (online, known)
StateCounts = Callable[[], Mapping[str, int]]  # rollout state -> rollouts


class _FleetCollector(Collector):
    """Gauges computed at scrape time from the registry, so they are right after a restart too."""

    def __init__(
        self, devices: ClassCounts, rollouts: StateCounts, cache: Callable[[], float], classes: frozenset[str]
    ) -> None:
        self.devices, self.rollouts, self.cache, self.classes = devices, rollouts, cache, classes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        online = GaugeMetricFamily(
            "edgecut_devices_online", "Devices whose state is online", labels=["device_class"]
        )
        known = GaugeMetricFamily("edgecut_devices_known", "Devices in the registry", labels=["device_class"])
        by_label: dict[str, tuple[int, int]] = {}
        for device_class, (n_online, n_known) in self.devices().items():
            # a device names its own class: anything outside the budget table is "other", so a
            # hostile or misconfigured device cannot mint label values
            label = device_class if device_class in self.classes else "other"
            o, k = by_label.get(label, (0, 0))
            by_label[label] = (o + n_online, k + n_known)
        for label, (n_online, n_known) in sorted(by_label.items()):
            online.add_metric([label], n_online)
            known.add_metric([label], n_known)
        yield online
        yield known
        rollouts = GaugeMetricFamily("edgecut_rollouts", "Staged rollouts by state", labels=["state"])
        for state, n in sorted(self.rollouts().items()):
            rollouts.add_metric([state], n)
        yield rollouts
        yield GaugeMetricFamily(
            "edgecut_build_cache_hit_ratio",
            "Share of model requests answered from the store since the server started",
            value=self.cache(),
        )


class FleetMetrics:
    """An observer of fleet events that keeps the counters; `render()` is the /metrics body."""

    def __init__(self, devices: ClassCounts, rollouts: StateCounts, classes: frozenset[str]) -> None:
        # `*_created` series double every counter for a timestamp nobody here graphs
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.needs = Counter("edgecut_needs_received", "Needs messages received", ["result"], registry=r)
        self.requests = Counter(
            "edgecut_build_requests", "Model requests by how they were answered", ["source"], registry=r
        )
        self.started = Counter("edgecut_builds_started", "Builds a worker started", registry=r)
        self.builds = Counter("edgecut_builds", "Builds finished", ["result"], registry=r)
        self.build_seconds = Histogram(
            "edgecut_build_seconds",
            "Build time, worker start to artifact stored",
            buckets=BUILD_BUCKETS,
            registry=r,
        )
        self.downloads = Counter("edgecut_downloads", "DownloadModel streams ended", ["result"], registry=r)
        self.download_bytes = Counter(
            "edgecut_download_bytes", "Artifact bytes sent by DownloadModel", registry=r
        )
        self.swaps = Counter("edgecut_swaps", "Hot-swaps devices reported", ["result"], registry=r)
        self.rollbacks = Counter(
            "edgecut_rollbacks", "Rollbacks by who asked for them", ["reason"], registry=r
        )
        self.commands = Counter(
            "edgecut_operator_commands",
            "Operator commands by action and outcome",
            ["action", "result"],
            registry=r,
        )
        self.summaries = Counter(
            "edgecut_stats_summaries", "Statistics summaries devices sent, by outcome", ["result"], registry=r
        )
        for result in (TAKEN, *REASONS):
            self.summaries.labels(result)
        for result in ("accepted", "refused"):
            self.needs.labels(result)
        for source in ("build", "cache", "joined", "repeat"):
            self.requests.labels(source)
        for result in ("done", "failed"):
            self.builds.labels(result)
        for result in ("complete", "partial"):
            self.downloads.labels(result)
        for result in ("ok", "failed"):
            self.swaps.labels(result)
        for reason in ("operator", "rollout"):
            self.rollbacks.labels(reason)
        self._summary_results = frozenset((TAKEN, *REASONS))
        self._lock = threading.Lock()
        self._running: dict[str, float] = {}  # build key -> when a worker started it
        self._cache_hits = self._built = 0
        r.register(_FleetCollector(devices, rollouts, self._cache_ratio, classes))

    def _cache_ratio(self) -> float:
        with self._lock:
            total = self._cache_hits + self._built
            return self._cache_hits / total if total else 0.0

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def __call__(self, e: FleetEvent) -> None:
        d = e.data
        if e.kind == "needs":
            self.needs.labels("accepted" if d.get("ok") else "refused").inc()
        elif e.kind == "job":
            self._job(e)
        elif e.kind == "download":
            self.downloads.labels("complete" if d.get("complete") else "partial").inc()
            self.download_bytes.inc(max(0, int(d.get("bytes", 0))))
        elif e.kind == "swap":
            self.swaps.labels("ok" if d.get("ok") else "failed").inc()
        elif e.kind == "command":
            self.commands.labels(str(d.get("action", "")), str(d.get("result", ""))).inc()
            if d.get("action") == "rollback" and d.get("result") == "ok":
                self.rollbacks.labels("operator").inc()
        elif e.kind == "stats" and d.get("result") in self._summary_results:
            self.summaries.labels(str(d["result"])).inc()
        elif e.kind == "rollout" and d.get("rolled_back_device"):
            self.rollbacks.labels("rollout").inc()

    def _job(self, e: FleetEvent) -> None:
        d = e.data
        stage, key, source = d.get("stage"), str(d.get("build_key", "")), d.get("source")
        if source in ("build", "cache", "joined", "repeat"):
            self.requests.labels(source).inc()
            with self._lock:
                if source == "cache":
                    self._cache_hits += 1
                elif source == "build":
                    self._built += 1
            return
        if stage == "running":
            self.started.inc()
            with self._lock:
                self._running[key] = e.at
        elif stage in ("ready", "failed"):
            self.builds.labels("done" if stage == "ready" else "failed").inc()
            with self._lock:
                t0 = self._running.pop(key, None)
            if t0 is not None:
                self.build_seconds.observe(max(0.0, e.at - t0))
