"""The JSON API and the pages on a real registry, store and history (no broker): what they say and refuse."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from edgecut.server.fleet.history import FleetHistory
from edgecut.server.fleet.observe import FleetEvent
from edgecut.server.fleet.registry import Registry
from edgecut.server.fleet.store import LocalStore
from edgecut.server.spec import Budget, BuildSpec
from edgecut.server.web.app import STATIC, create_app
from edgecut.server.web.context import WebContext
from edgecut.server.web.events import EventHub
from edgecut.server.web.metrics import FleetMetrics
from edgecut.server.web.views import Views
from tests.support.onnx_engine import OnnxTestEngine

TEMPLATES = STATIC.parent / "templates"
UPLOT_VERSION = "1.6.32"  # the Makefile's `vendor` target pins the same


class Web:
    def __init__(self, root: Path) -> None:
        self.registry = Registry(f"sqlite:///{root / 'r.sqlite3'}")
        self.store = LocalStore(root / "store")
        self.history = FleetHistory(self.registry)
        self.hub = EventHub()
        self.views = Views(self.registry, self.store, self.history, self.hub)
        metrics = FleetMetrics(self.views.class_counts, dict, frozenset({"x86", "rpi4"}))
        self.client = TestClient(create_app(WebContext(self.views, self.hub, metrics)))
        engine = OnnxTestEngine(root / "engine")
        built = engine.build(BuildSpec.create(["seg", "depth"], Budget(macs_fraction=0.3)), lambda *_: None)
        self.artifact = self.store.put_file(built.onnx_path, built.meta).artifact_id

    def device(
        self, device_id: str, cls: str, tasks: list[str], status: str = "online", serving: bool = True
    ) -> None:
        self.registry.record_needs(
            device_id, tasks, 1, {}, {"cpu_count": 4, "arch": "aarch64"}, cls, "macs=0.3"
        )
        aid = self.artifact if serving else ""
        self.registry.record_state(device_id, status, aid, ["depth", "seg"] if serving else [], "0.1.0")
        if serving:
            self.registry.record_swap(device_id, aid, True, "", "", 12.0)
            self.registry.record_telemetry(
                device_id, {"artifact_id": aid, "latency_p50_ms": 3.0, "latency_p95_ms": 5.0}
            )


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    w = Web(tmp_path)
    w.device("pi-a", "rpi4", ["seg", "depth"])
    w.device("pi-b", "rpi4", ["seg", "depth"], status="offline")
    w.device("box", "x86", ["normals"], serving=False)
    yield w
    w.client.close()
    w.registry.close()


def test_fleet_lists_devices_with_model_counts_and_filters(web: Web) -> None:
    doc = web.client.get("/api/v1/devices").json()
    assert doc["counts"]["total"] == 3 and doc["counts"]["online"] == 2 and doc["counts"]["offline"] == 1
    assert doc["counts"]["by_class"]["rpi4"] == {"online": 1, "total": 2}
    a = next(d for d in doc["devices"] if d["device_id"] == "pi-a")
    assert a["tasks"] == ["seg", "depth"] and a["latency_p95_ms"] == 5.0 and a["swapped_at"]
    m = a["model"]
    assert m["artifact_id"] == web.artifact and m["params"] < m["full_params"] and 0 < m["macs_ratio"] < 1
    online = web.client.get("/api/v1/devices", params={"status": "online"}).json()
    assert [d["device_id"] for d in online["devices"]] == ["box", "pi-a"]
    by_task = web.client.get("/api/v1/devices", params={"task": "normals"}).json()
    assert [d["device_id"] for d in by_task["devices"]] == ["box"]
    by_class = web.client.get("/api/v1/devices", params={"device_class": "rpi4", "status": "offline"}).json()
    assert [d["device_id"] for d in by_class["devices"]] == ["pi-b"] and by_class["counts"]["total"] == 3


def test_device_detail_and_its_quality_table(web: Web) -> None:
    d = web.client.get("/api/v1/devices/pi-a").json()
    assert [s["artifact_id"] for s in d["swaps"]] == [web.artifact]
    rows = {q["task"]: q for q in d["quality"]}
    assert rows["seg"]["metric"] == "miou" and rows["seg"]["full"] == 0.6 and rows["seg"]["value"] < 0.6
    assert rows["depth"]["lower_is_better"] and rows["depth"]["change"] < 0
    assert d["known_models"] == [{"artifact_id": web.artifact, "tasks": ["depth", "seg"], "serving": True}]
    r = web.client.get("/api/v1/devices/nobody")
    assert r.status_code == 404 and r.json()["detail"] == "no device 'nobody' in the registry"


def test_telemetry_over_time(web: Web) -> None:
    for i in range(3):
        web.history.add_telemetry("pi-a", 100.0 + i, {"latency_p95_ms": 5.0 + i, "rss_bytes": 1 << 20})
    doc = web.client.get("/api/v1/devices/pi-a/telemetry").json()
    assert [s["latency_p95_ms"] for s in doc["samples"]] == [5.0, 6.0, 7.0]
    assert web.client.get("/api/v1/devices/pi-a/telemetry", params={"limit": 0}).status_code == 422


def test_builds_show_runs_quality_and_latency(web: Web) -> None:
    web.history.build_queued("k1", ["depth", "seg"], 10.0)
    web.history.build_started("k1", ["depth", "seg"], 12.0)
    web.history.build_finished("k1", 20.0, True, artifact_id=web.artifact)
    web.history.set_latency(web.artifact, 0.5, 20)
    doc = web.client.get("/api/v1/builds").json()
    (run,) = doc["recent"]
    assert (
        run["seconds"] == 8.0
        and run["ort_latency_ms"] == 0.5
        and {q["task"] for q in run["quality"]}
        == {
            "seg",
            "depth",
        }
    )
    art = web.client.get(f"/api/v1/artifacts/{web.artifact}").json()
    assert art["ort_latency_ms"] == 0.5 and art["model"]["tasks"] == ["depth", "seg"]
    assert web.client.get("/api/v1/artifacts/..%2F..%2Fetc").status_code in (400, 404)
    assert web.client.get("/api/v1/artifacts/" + "0" * 64).status_code == 404


def test_pages_render_what_the_api_says(web: Web) -> None:
    fleet = web.client.get("/fleet").text
    assert 'id="dev-pi-a"' in fleet and 'data-status="offline"' in fleet and web.artifact[:12] in fleet
    only = web.client.get("/fleet?status=offline").text
    assert 'id="dev-pi-b"' in only and 'id="dev-pi-a"' not in only
    device = web.client.get("/devices/pi-a").text
    assert "Quality vs the full model" in device and "miou" in device
    assert web.client.get("/devices/nobody").status_code == 404
    assert "Staged rollouts" in web.client.get("/builds").text
    assert web.client.get("/", follow_redirects=False).headers["location"] == "/fleet"


def test_the_dashboard_works_offline() -> None:
    """No page or asset loads anything from another host (no CDN), and the chart library is vendored."""
    for path in [*TEMPLATES.glob("*.html"), *STATIC.glob("*.js"), *STATIC.glob("*.css")]:
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", path.read_text()), path
    head = (STATIC / "vendor" / "uPlot.iife.min.js").read_text()[:200]
    assert f"uPlot (v{UPLOT_VERSION})" in head
    assert (STATIC / "vendor" / "uPlot.LICENSE.txt").read_text().startswith("The MIT License")


def test_metrics_endpoint(web: Web) -> None:
    r = web.client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    assert 'edgecut_devices_online{device_class="rpi4"} 1.0' in r.text
    assert 'edgecut_devices_known{device_class="rpi4"} 2.0' in r.text


def test_sse_delivers_a_notice_per_fleet_event(web: Web) -> None:
    got: list[str] = []
    with web.client.stream("GET", "/api/v1/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        while "event: hello" not in got:
            got.append(next(lines))
        threading.Timer(
            0.1, web.hub, args=(FleetEvent("swap", "pi-a", {"ok": True, "artifact_id": "x"}),)
        ).start()
        while not any(line.startswith("data:") and "pi-a" in line for line in got):
            got.append(next(lines))
        web.hub.close()  # the server stopping ends the stream
    assert "event: swap" in got
