"""deploy/grafana/edgecut-fleet.json: valid, and every query names only metrics the server exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from edgecut.server.web.metrics import FleetMetrics

DASHBOARD = Path(__file__).parents[3] / "deploy" / "grafana" / "edgecut-fleet.json"


def exported() -> set[str]:
    """The series names /metrics can carry (a labelled counter has no sample until it counts)."""
    m = FleetMetrics(lambda: {"x86": (1, 1)}, lambda: {"canary": 1}, frozenset({"x86"}))
    names = set()
    for family in m.registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    rendered = {s.name for f in text_string_to_metric_families(m.render().decode()) for s in f.samples}
    assert rendered <= names
    return names


def test_every_panel_queries_exported_metrics() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "edgecut-fleet" and doc["panels"]
    names = exported()
    seen = set()
    for panel in doc["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for word in re.findall(r"\bedgecut_[a-z_]+", target["expr"]):
                assert word in names, f"{panel['title']}: {word} is not exported"
                seen.add(word)
    # the list: devices online by class, needs, builds, build seconds, cache hits, downloads and
    # bytes, swaps, rollbacks, rollout state
    for must in (
        "edgecut_devices_online",
        "edgecut_needs_received_total",
        "edgecut_builds_started_total",
        "edgecut_builds_total",
        "edgecut_build_seconds_bucket",
        "edgecut_build_cache_hit_ratio",
        "edgecut_downloads_total",
        "edgecut_download_bytes_total",
        "edgecut_swaps_total",
        "edgecut_rollbacks_total",
        "edgecut_rollouts",
    ):
        assert must in seen, must


def test_panels_fit_the_grid() -> None:
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0
