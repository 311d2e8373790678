"""FleetMetrics: fleet events move the counters; gauges come from the registry; labels stay bounded."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from edgecut.server.fleet.events import FleetEvent
from edgecut.server.web.metrics import FleetMetrics


def samples(m: FleetMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: FleetMetrics, name: str, **labels: str) -> float:
    return samples(m).get((name, tuple(sorted(labels.items()))), 0.0)


def job(stage: str, at: float, **data: object) -> FleetEvent:
    return FleetEvent("job", data={"build_key": "k1", "stage": stage, **data}, at=at)


def test_events_move_the_counters() -> None:
    m = FleetMetrics(lambda: {}, dict, frozenset({"x86"}))
    m(FleetEvent("needs", "d1", {"ok": True}))
    m(FleetEvent("needs", "d2", {"ok": False}))
    m(job("queued", 0.0, source="build"))
    m(job("running", 10.0))
    m(job("ready", 40.0, artifact_id="a"))
    m(job("ready", 41.0, source="cache"))
    m(job("ready", 42.0, source="cache"))
    m(job("pruning", 42.0, source="joined"))
    m(FleetEvent("download", "d1", {"bytes": 1000, "complete": True}))
    m(FleetEvent("download", "d1", {"bytes": 300, "complete": False}))
    m(FleetEvent("swap", "d1", {"ok": True}))
    m(FleetEvent("swap", "d2", {"ok": False}))
    m(FleetEvent("command", "d1", {"action": "rollback", "result": "ok"}))
    m(FleetEvent("rollout", "d3", {"state": "rolled_back", "rolled_back_device": "d3"}))
    assert value(m, "edgecut_needs_received_total", result="accepted") == 1
    assert value(m, "edgecut_needs_received_total", result="refused") == 1
    assert value(m, "edgecut_builds_started_total") == 1
    assert value(m, "edgecut_builds_total", result="done") == 1  # cache answers are not builds
    assert value(m, "edgecut_build_seconds_count") == 1 and value(m, "edgecut_build_seconds_sum") == 30.0
    assert value(m, "edgecut_build_seconds_bucket", le="30.0") == 1
    assert value(m, "edgecut_build_requests_total", source="cache") == 2
    assert value(m, "edgecut_build_requests_total", source="joined") == 1
    assert abs(value(m, "edgecut_build_cache_hit_ratio") - 2 / 3) < 1e-9
    assert value(m, "edgecut_downloads_total", result="complete") == 1
    assert value(m, "edgecut_download_bytes_total") == 1300
    assert (
        value(m, "edgecut_swaps_total", result="ok") == 1
        and value(m, "edgecut_swaps_total", result="failed") == 1
    )
    assert value(m, "edgecut_rollbacks_total", reason="operator") == 1
    assert value(m, "edgecut_rollbacks_total", reason="rollout") == 1


def test_device_gauges_bound_their_labels() -> None:
    counts = {"x86": (2, 3), "made-up-1": (1, 1), "made-up-2": (0, 4)}
    m = FleetMetrics(lambda: counts, lambda: {"canary": 1, "promoted": 2}, frozenset({"x86", "fallback"}))
    assert value(m, "edgecut_devices_online", device_class="x86") == 2
    assert value(m, "edgecut_devices_known", device_class="x86") == 3
    # classes a device made up are folded into one label value
    assert value(m, "edgecut_devices_online", device_class="other") == 1
    assert value(m, "edgecut_devices_known", device_class="other") == 5
    assert not [k for k in samples(m) if ("device_class", "made-up-1") in k[1]]
    assert value(m, "edgecut_rollouts", state="promoted") == 2


def test_names_follow_prometheus_conventions() -> None:
    m = FleetMetrics(lambda: {"x86": (1, 1)}, dict, frozenset({"x86"}))
    names = {f.name for f in text_string_to_metric_families(m.render().decode())}
    assert all(n.startswith("edgecut_") and n == n.lower() for n in names)
    counters = {f.name for f in text_string_to_metric_families(m.render().decode()) if f.type == "counter"}
    assert "edgecut_download_bytes" in counters and "edgecut_builds" in counters  # exposed as *_total
    assert not [n for n in samples(m) if n[0].endswith("_created")]


def test_statistics_summaries_are_counted_by_outcome_with_bounded_labels() -> None:
    """Issue 31: taken summaries and each reason for dropping one; an unknown result adds no label."""
    m = FleetMetrics(lambda: {}, dict, frozenset({"x86"}))
    m(FleetEvent("stats", "d1", {"result": "taken", "images": 32}))
    m(FleetEvent("stats", "d1", {"result": "replayed"}))
    m(FleetEvent("stats", "d2", {"result": "replayed"}))
    m(FleetEvent("stats", "d2", {"result": "made-up"}))
    assert value(m, "edgecut_stats_summaries_total", result="taken") == 1
    assert value(m, "edgecut_stats_summaries_total", result="replayed") == 2
    assert value(m, "edgecut_stats_summaries_total", result="wrong_device") == 0
    assert value(m, "edgecut_stats_summaries_total", result="made-up") == 0
