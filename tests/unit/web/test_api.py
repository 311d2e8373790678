"""The JSON API and the pages on a real registry, store and history (no broker): what they say and refuse."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from edgecut.server.fleet.commands.desk import CommandDesk, open_operator_key
from edgecut.server.fleet.events import FleetEvent
from edgecut.server.fleet.state.history import FleetHistory
from edgecut.server.fleet.state.history_recorder import HistoryRecorder
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.schema import REFINE
from edgecut.server.fleet.state.store import LocalStore
from edgecut.server.spec import Budget, BuildSpec, Refinement
from edgecut.server.web.app import STATIC, create_app
from edgecut.server.web.context import User, WebContext
from edgecut.server.web.events import EventHub
from edgecut.server.web.metrics import FleetMetrics
from edgecut.server.web.views import Views
from tests.support.onnx_engine import OnnxTestEngine

TEMPLATES = STATIC.parent / "templates"
UPLOT_VERSION = "1.6.32"  # the Makefile's `vendor` target pins the same


class Web:
    def __init__(
        self,
        root: Path,
        users: dict[str, str | User] | None = None,
        client: str = "testclient",
        allowed_hosts: list[str] | None = None,
    ) -> None:
        self.registry = Registry(f"sqlite:///{root / 'r.sqlite3'}")
        self.store = LocalStore(root / "store")
        self.history = FleetHistory(self.registry)
        self.hub = EventHub()
        self.views = Views(self.registry, self.store, self.history, self.hub)
        metrics = FleetMetrics(self.views.class_counts, dict, frozenset({"x86", "rpi4"}))
        self.published: list[tuple[str, bytes]] = []
        self.desk = CommandDesk(
            self.registry,
            open_operator_key(None, root),
            lambda d, p: self.published.append((d, p)),
            lambda: ["seg", "depth", "normals"],
        )
        accounts = {n: u if isinstance(u, User) else User(u) for n, u in (users or {}).items()}
        ctx = WebContext(
            self.views, self.hub, metrics, self.desk, accounts, allowed_hosts=allowed_hosts or []
        )
        # a browser on the server's machine names it localhost (TestClient's default "testserver" is
        # refused like any name outside http_allowed_hosts)
        self.client = TestClient(create_app(ctx), base_url="http://localhost", client=(client, 50000))
        engine = OnnxTestEngine(root / "engine")
        built = engine.build(BuildSpec.create(["seg", "depth"], Budget(macs_fraction=0.3)), lambda *_: None)
        self.artifact = self.store.put_file(built.onnx_path, built.meta).artifact_id

    def device(
        self, device_id: str, cls: str, tasks: list[str], status: str = "online", serving: bool = True
    ) -> None:
        self.registry.devices.record_needs(
            device_id, tasks, 1, {}, {"cpu_count": 4, "arch": "aarch64"}, cls, "macs=0.3"
        )
        aid = self.artifact if serving else ""
        self.registry.devices.record_state(
            device_id, status, aid, ["depth", "seg"] if serving else [], "0.1.0"
        )
        if serving:
            self.registry.offers.record_swap(device_id, aid, True, "", "", 12.0)
            self.registry.devices.record_telemetry(
                device_id, {"artifact_id": aid, "latency_p50_ms": 3.0, "latency_p95_ms": 5.0}
            )


def _fleet(w: Web) -> Web:
    w.device("pi-a", "rpi4", ["seg", "depth"])
    w.device("pi-b", "rpi4", ["seg", "depth"], status="offline")
    w.device("box", "x86", ["normals"], serving=False)
    return w


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    w = _fleet(Web(tmp_path))
    yield w
    w.client.close()
    w.registry.close()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Web]:
    """The dashboard as a browser on the server's own machine reaches it (no users configured)."""
    w = _fleet(Web(tmp_path, client="127.0.0.1"))
    yield w
    w.client.close()
    w.registry.close()


@pytest.fixture
def with_users(tmp_path: Path) -> Iterator[Web]:
    w = _fleet(Web(tmp_path, users={"alice": "s3cret"}, client="203.0.113.7"))
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
    r = web.client.get("/api/v1/devices/nobody")
    assert r.status_code == 404 and r.json()["detail"] == "no device 'nobody' in the registry"


def test_a_trade_off_on_the_served_model_is_said_on_the_device_page(web: Web, tmp_path: Path) -> None:
    """The engine leaves a task behind only with a sentence on the artifact; the operator sees it."""
    built = OnnxTestEngine(tmp_path / "e2").build(
        BuildSpec.create(["seg", "depth"], Budget(macs_fraction=0.5)), lambda *_: None
    )
    said = "depth -7.2 % against the full model while seg stays within 5 % at this budget"
    built.meta.trade_off = said
    aid = web.store.put_file(built.onnx_path, built.meta).artifact_id
    web.registry.devices.record_needs("pi-t", ["seg", "depth"], 1, {}, {"cpu_count": 4}, "rpi4", "macs=0.5")
    web.registry.devices.record_state("pi-t", "online", aid, ["depth", "seg"], "0.1.0")
    assert web.client.get("/api/v1/devices/pi-t").json()["trade_off"] == said
    page = web.client.get("/devices/pi-t").text
    assert "trade-off:" in page and said in page
    assert "trade-off:" not in web.client.get("/devices/pi-a").text  # a model without one says nothing


def test_the_model_says_which_version_of_its_build_it_is(web: Web, tmp_path: Path) -> None:
    assert web.client.get("/api/v1/devices/pi-a").json()["model"]["version"] == "quick model"
    engine = OnnxTestEngine(tmp_path / "e3", retrained={2})
    spec = BuildSpec.create(["seg", "depth"], Budget(macs_fraction=0.3))
    quick = engine.build(spec, lambda *_: None)
    for n, said in ((1, "refinement 1"), (2, "refinement 2 (from scratch)")):
        built = engine.refine(spec, Refinement(web.artifact, quick.meta, n), lambda *_: None)
        assert built is not None
        aid = web.store.put_file(built.onnx_path, built.meta).artifact_id
        web.registry.devices.record_state("pi-a", "online", aid, ["depth", "seg"], "0.1.0")
        assert web.client.get("/api/v1/devices/pi-a").json()["model"]["version"] == said
        assert said in web.client.get("/devices/pi-a").text


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


def test_commands_from_this_machine_are_sent_and_audited_as_local(local: Web) -> None:
    r = local.client.post("/api/v1/devices/pi-a/commands", json={"action": "set_tasks", "tasks": ["depth"]})
    assert r.status_code == 202, r.text
    rec = r.json()
    assert rec["state"] == "sent" and rec["who"] == "local" and local.published[0][0] == "pi-a"
    listed = local.client.get("/api/v1/commands", params={"device_id": "pi-a"}).json()["commands"]
    assert [c["command_id"] for c in listed] == [rec["command_id"]]
    (entry,) = local.client.get("/api/v1/audit").json()["audit"]
    assert entry["who"] == "local" and entry["origin"] == "127.0.0.1" and entry["event"] == "sent"
    assert "Operator commands" in local.client.get("/devices/pi-a").text


def test_command_refusals(local: Web) -> None:
    bad = local.client.post("/api/v1/devices/pi-a/commands", json={"action": "set_tasks", "tasks": ["sky"]})
    assert bad.status_code == 400 and bad.json()["detail"].startswith("unknown task 'sky'")
    missing = local.client.post("/api/v1/devices/ghost/commands", json={"action": "pin"})
    assert missing.status_code == 404
    unknown = local.client.post("/api/v1/devices/pi-a/commands", json={"action": "format_disk"})
    assert unknown.status_code == 422
    extra = local.client.post("/api/v1/devices/pi-a/commands", json={"action": "pin", "shell": "rm -rf /"})
    assert extra.status_code == 422
    # a page on another site making the operator's browser post here
    csrf = local.client.post(
        "/api/v1/devices/pi-a/commands",
        json={"action": "rollback"},
        headers={"Origin": "http://evil.example"},
    )
    assert csrf.status_code == 403 and "not from http://evil.example" in csrf.json()["detail"]
    assert local.published == []


def test_without_users_only_this_machine_may_command(web: Web) -> None:
    r = web.client.post("/api/v1/devices/pi-a/commands", json={"action": "pin"})
    assert r.status_code == 403 and "only from this machine" in r.json()["detail"]
    assert web.client.get("/api/v1/devices").status_code == 200  # reading stays open
    assert web.published == []


def test_with_users_everything_asks_who_and_the_audit_names_them(with_users: Web) -> None:
    c = with_users.client
    assert c.get("/api/v1/devices").status_code == 401
    assert c.get("/fleet").headers["www-authenticate"].startswith("Basic")
    assert c.get("/metrics").status_code == 401
    assert c.get("/healthz").status_code == 200
    assert c.get("/api/v1/devices", auth=("alice", "wrong")).status_code == 401
    assert c.get("/api/v1/devices", auth=("mallory", "s3cret")).status_code == 401
    assert c.post("/api/v1/devices/pi-a/commands", json={"action": "pin"}).status_code == 401
    r = c.post("/api/v1/devices/pi-a/commands", json={"action": "pin"}, auth=("alice", "s3cret"))
    assert r.status_code == 202 and r.json()["who"] == "alice"
    (entry,) = c.get("/api/v1/audit", auth=("alice", "s3cret")).json()["audit"]
    assert entry["who"] == "alice" and entry["origin"] == "203.0.113.7"


def test_a_host_name_outside_the_allowed_hosts_is_refused_even_with_a_matching_origin(local: Web) -> None:
    # DNS rebinding: evil.example resolves to this server, so the browser sends Host and Origin alike
    rebound = {"Host": "evil.example", "Origin": "http://evil.example"}
    r = local.client.post("/api/v1/devices/pi-a/commands", json={"action": "pin"}, headers=rebound)
    assert r.status_code == 421 and "http_allowed_hosts" in r.json()["detail"]
    assert local.client.get("/api/v1/devices", headers={"Host": "evil.example"}).status_code == 421
    assert local.client.get("/fleet", headers={"Host": "evil.example:8080"}).status_code == 421
    assert local.published == []
    # IP addresses (a scraper dialling a pod) and localhost are this server; probes need no Host
    for host in ("127.0.0.1:8080", "[::1]:8080", "10.1.2.3", "localhost:8080"):
        assert local.client.get("/metrics", headers={"Host": host}).status_code == 200, host
    assert local.client.get("/healthz", headers={"Host": "evil.example"}).status_code == 200


def test_allowed_hosts_admit_the_names_the_operator_lists(tmp_path: Path) -> None:
    w = _fleet(Web(tmp_path, client="127.0.0.1", allowed_hosts=["fleet.example.com", "*.edge.example"]))
    for host, status in (
        ("fleet.example.com", 200),
        ("FLEET.example.com:443", 200),
        ("eu.edge.example", 200),
        ("fleet.example.com.evil.example", 421),
        ("edge.example.evil", 421),
    ):
        assert w.client.get("/api/v1/devices", headers={"Host": host}).status_code == status, host
    w.client.close()
    w.registry.close()


def test_a_viewer_reads_but_may_not_command_and_the_refusal_is_audited(tmp_path: Path) -> None:
    w = _fleet(
        Web(
            tmp_path,
            users={"vera": User("look", "viewer"), "otto": User("act", "operator")},
            client="203.0.113.9",
        )
    )
    c = w.client
    assert c.get("/api/v1/devices", auth=("vera", "look")).status_code == 200
    assert c.get("/metrics", auth=("vera", "look")).status_code == 200
    r = c.post("/api/v1/devices/pi-a/commands", json={"action": "rollback"}, auth=("vera", "look"))
    assert r.status_code == 403 and "only an operator" in r.json()["detail"]
    assert w.published == []
    ok = c.post("/api/v1/devices/pi-a/commands", json={"action": "pin"}, auth=("otto", "act"))
    assert ok.status_code == 202 and ok.json()["who"] == "otto"
    audit = c.get("/api/v1/audit", auth=("vera", "look")).json()["audit"]
    assert [(a["who"], a["event"], a["action"]) for a in audit[::-1]] == [
        ("vera", "refused", "rollback"),
        ("otto", "sent", "pin"),
    ]
    c.close()
    w.registry.close()


def test_refinements_show_their_live_progress_a_label_and_their_artifacts(web: Web) -> None:
    recorder = HistoryRecorder(web.history, web.store, latency_runs=0)
    recorder.start()
    web.hub.jobs.clear()
    total = {"tasks": ["depth", "seg"], "budget": {"macs_fraction": 0.3}}
    refine = {"of": "k1", "parent": web.artifact, "number": 1, "total": 2}
    web.registry.jobs.create("k1~r1", {**total, "refine": refine}, kind=REFINE)

    def emit(stage: str, fraction: float, **data: object) -> None:
        e = FleetEvent(
            "refinement", data={"build_key": "k1~r1", "stage": stage, "fraction": fraction, **data}
        )
        web.hub(e)
        recorder(e)

    emit("queued", 0.0, tasks=["depth", "seg"], **refine)
    emit("running", 0.0, tasks=["depth", "seg"], **refine)
    emit("recovery", 0.05, **refine)  # the registry keeps the stage's first fraction ...
    web.registry.jobs.update("k1~r1", stage="recovery", fraction=0.05)
    emit("recovery", 0.54, **refine)  # ... the event stream goes on
    (job,) = web.client.get("/api/v1/builds").json()["active"]
    assert (job["stage"], job["fraction"], job["label"], job["refines"]) == (
        "recovery",
        0.54,
        "refinement 1/2",
        "k1",
    )
    page = web.client.get("/builds").text
    assert "refinement 1/2" in page and 'value="0.54"' in page

    emit("ready", 1.0, artifact_id=web.artifact)
    assert recorder.flush()
    (run,) = web.client.get("/api/v1/builds").json()["recent"]
    assert (run["build_key"], run["label"], run["result"]) == ("k1~r1", "refinement 1", "done")
    assert run["model"] is not None and run["artifact_id"] == web.artifact and run["quality"]
    assert web.hub.job_progress("k1~r1") is None  # no longer active
    recorder.stop()


def test_the_precision_a_device_chose_and_its_timings_are_shown(web: Web) -> None:
    """Issue 30: the operator sees which precision each device serves and what it timed on its own CPU,
    from the telemetry exactly as the bridge records it (the proto's JSON)."""
    from edgecut.server.fleet.link.wire import to_dict
    from edgecut.v1 import fleet_pb2 as pb

    t = pb.Telemetry(device_id="pi-a", artifact_id=web.artifact, latency_p50_ms=0.6, precision="int8")
    t.timings.add(precision="fp32", artifact_id=web.artifact, median_ms=1.58, runs=40)
    t.timings.add(precision="int8", artifact_id="b" * 64, median_ms=0.61, runs=40)
    t.timings.add(precision="fp16", artifact_id="c" * 64, note="its provider does not run fp16")
    web.registry.devices.record_telemetry("pi-a", to_dict(t))
    d = web.client.get("/api/v1/devices/pi-a").json()
    assert d["precision"] == "int8"
    assert d["precision_timings"] == [
        {"precision": "fp32", "median_ms": 1.58},
        {"precision": "int8", "median_ms": 0.61},
    ]  # a precision the device did not time is not shown as 0 ms
    page = web.client.get("/devices/pi-a").text
    assert re.search(r'id="device-precision">int8 .*fp32 1\.58 ms · int8 0\.61 ms', page)
    assert 'id="device-providers"' not in page  # its needs named no provider
    # what the model runs on, from the needs' resources (the agent lists only providers that loaded)
    web.registry.devices.record_needs(
        "pi-a", ["seg", "depth"], 2, {}, {"ort_providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]},
        "jetson", "macs=0.3",
    )  # fmt: skip
    d = web.client.get("/api/v1/devices/pi-a").json()
    assert d["resources"]["ort_providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    page = web.client.get("/devices/pi-a").text
    assert 'id="device-providers">on CUDAExecutionProvider, CPUExecutionProvider<' in page
    # an agent older than the field reports no precision: it serves fp32
    assert web.client.get("/api/v1/devices/pi-b").json()["precision"] == "fp32"


def test_the_dashboard_says_which_devices_send_statistics_and_what_was_taken(web: Web) -> None:
    """Issue 31: per device, whether it sends statistics summaries (adaptation on) and the latest taken
    per model: sequence, image count and digest, never the statistics themselves."""
    assert web.registry.statistics.take("pi-a", web.artifact, 3, 96, "ab" * 32, b"summary") is None
    devices = {d["device_id"]: d for d in web.client.get("/api/v1/devices").json()["devices"]}
    assert devices["pi-a"]["statistics"]["sequence"] == 3 and devices["pi-a"]["statistics"]["taken"] == 1
    assert devices["pi-b"]["statistics"] is None and devices["box"]["statistics"] is None
    d = web.client.get("/api/v1/devices/pi-a").json()
    assert [(x["artifact_id"], x["sequence"], x["images"]) for x in d["summaries"]] == [(web.artifact, 3, 96)]
    assert "summary" not in d["summaries"][0]
    page = web.client.get("/devices/pi-a").text
    assert 'id="statistics"' in page and "abababababab" in page
    assert 'id="statistics"' not in web.client.get("/devices/pi-b").text


def test_the_devices_page_shows_which_devices_run_an_adapted_model_and_their_drift(web: Web) -> None:
    """Issue 31: a device running a model adapted to its statistics shows it on the fleet list and its own
    page (from which summary, which bucket), with its drift: its latest summary's distance, in bucket
    widths, from the one its model was adapted to."""
    import numpy as np

    from edgecut import norm_stats
    from edgecut.server.fleet.policy import stat_buckets

    def summary(seq: int, mean: float, std: float) -> bytes:
        layers = {norm_stats.INPUT: (np.full(3, mean, np.float32), np.full(3, std * std, np.float32))}
        return norm_stats.to_proto(layers, "pi-a", web.artifact, 64, seq, 0).SerializeToString()

    dim = summary(3, 0.2, 0.12)
    assert web.registry.statistics.take("pi-a", web.artifact, 3, 64, "ab" * 32, dim) is None
    from edgecut.v1 import fleet_pb2 as pb

    point = stat_buckets.point(pb.StatsSummary.FromString(dim))
    label = stat_buckets.bucket(point)
    assert web.registry.adaptations.choose("pi-a", "k1", "b" * 64, label, 3, point, "k1~ajob")
    web.registry.adaptations.offered("pi-a", web.artifact)  # pi-a serves web.artifact: the adapted model
    web.registry.adaptations.choose("pi-b", "k1", "b" * 64, label, 4, point, "k1~ajob")  # asked, not offered
    devices = {d["device_id"]: d for d in web.client.get("/api/v1/devices").json()["devices"]}
    a = devices["pi-a"]["adapted"]
    assert (a["serving"], a["sequence"], a["bucket"], a["drift"]) == (True, 3, label, 0.0)
    assert devices["pi-b"]["adapted"]["serving"] is False and devices["box"]["adapted"] is None
    fleet = web.client.get("/").text
    assert "adapted · seq 3 · drift 0.0" in fleet and fleet.count('data-field="adapted"') == 1

    # the camera got brighter: x2 is two bucket widths (steps of sqrt(2))
    assert web.registry.statistics.take("pi-a", web.artifact, 5, 64, "cd" * 32, summary(5, 0.4, 0.24)) is None
    d = web.client.get("/api/v1/devices/pi-a").json()
    assert d["adapted"]["drift"] == 2.0
    page = web.client.get("/devices/pi-a").text
    assert "runs an adapted model" in page and label in page and '<b data-field="drift">2.0</b>' in page


def test_adaptations_are_runs_of_their_own_on_the_builds_page(web: Web) -> None:
    """Issue 31: an adaptation job is recorded like a refinement (its own row, its outcome), labelled."""
    recorder = HistoryRecorder(web.history, web.store, latency_runs=0)
    recorder.start()
    for stage, data in (
        ("queued", {"tasks": ["depth", "seg"]}),
        ("running", {"tasks": ["depth", "seg"]}),
        ("adapted", {"artifact_id": web.artifact}),
    ):
        recorder(FleetEvent("adaptation", data={"build_key": "k1~abucket.parent", "stage": stage, **data}))
    recorder(FleetEvent("adaptation", data={"build_key": "k1~aother.parent", "stage": "queued"}))
    recorder(FleetEvent("adaptation", data={"build_key": "k1~aother.parent", "stage": "not shipped"}))
    assert recorder.flush()
    runs = {r["build_key"]: r for r in web.client.get("/api/v1/builds").json()["recent"]}
    done, lost = runs["k1~abucket.parent"], runs["k1~aother.parent"]
    assert (done["label"], done["refines"], done["result"], done["artifact_id"]) == (
        "adapted to a device",
        "k1",
        "done",
        web.artifact,
    )
    assert lost["result"] == "not shipped"
    assert "adapted to a device" in web.client.get("/builds").text
    recorder.stop()
