"""FleetHistory: telemetry bounded per device, build runs with durations, offers and cache hits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecut.server.fleet.state.history import FleetHistory
from edgecut.server.fleet.state.registry import Registry


@pytest.fixture
def history(tmp_path: Path) -> Iterator[FleetHistory]:
    reg = Registry(f"sqlite:///{tmp_path / 'r.sqlite3'}")
    yield FleetHistory(reg, keep_samples=5)
    reg.close()


def test_telemetry_keeps_the_last_samples_of_each_device(history: FleetHistory) -> None:
    for i in range(12):
        history.add_telemetry("d1", float(i), {"latency_p95_ms": float(i), "rss_bytes": 5 << 30})
    for i in range(3):
        history.add_telemetry("d2", float(i), {"latency_p95_ms": 100.0 + i})
    d1 = history.telemetry("d1")
    assert [s["at"] for s in d1] == [7.0, 8.0, 9.0, 10.0, 11.0]  # oldest first, bounded to 5
    assert d1[0]["rss_bytes"] == 5 << 30  # more than 32 bits
    assert [s["latency_p95_ms"] for s in history.telemetry("d2")] == [100.0, 101.0, 102.0]
    assert [s["at"] for s in history.telemetry("d1", since=10.0)] == [10.0, 11.0]
    assert [s["at"] for s in history.telemetry("d1", limit=2)] == [10.0, 11.0]


def test_build_runs_time_the_work_not_the_queue(history: FleetHistory) -> None:
    history.build_queued("k1", ["seg"], 100.0)
    history.build_started("k1", ["seg"], 160.0)
    history.build_finished("k1", 190.0, True, artifact_id="a" * 64)
    history.build_started("k2", ["depth"], 200.0)  # resumed after a restart: queued by the old process
    history.build_finished("k2", 205.0, False, error="recovery diverged")
    k2, k1 = history.build_runs()
    assert (k1.result, k1.seconds, k1.artifact_id, k1.tasks) == ("done", 30.0, "a" * 64, ["seg"])
    assert (k2.result, k2.seconds, k2.error) == ("failed", 5.0, "recovery diverged")
    history.build_queued("k1", ["seg"], 300.0)  # built again later: a second run of the same key
    assert [r.result for r in history.build_runs()] == ["", "failed", "done"]


def test_cache_hits_count_on_the_latest_run(history: FleetHistory) -> None:
    history.cache_hit("k0")  # a build older than the history: nothing to count on, nothing breaks
    history.build_queued("k1", ["seg"], 1.0)
    history.build_finished("k1", 2.0, True, artifact_id="a" * 64)
    history.cache_hit("k1")
    history.cache_hit("k1")
    (run,) = history.build_runs()
    assert run.cache_hits == 2


def test_latency(history: FleetHistory) -> None:
    history.set_latency("a" * 64, 1.5, 20)
    history.set_latency("a" * 64, 1.25, 20)
    assert history.latency(["a" * 64, "b" * 64]) == {"a" * 64: 1.25}
