"""The three pages of a small, varied fleet, photographed by Chromium (README and docs/operations.md).

Six agents of three classes (one joining late: a cache hit), an operator's task change and pin, and a
server upgrade whose slow variant for the rpi4 cohort is rolled back on its canary while the other
cohorts' variants are promoted. The pictures go to the test's temp dir; with EDGECUT_SCREENSHOTS_DIR
(`make screenshots` sets docs) they are written there as dashboard-{fleet,device,builds}.png.
"""

from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.support.live_fleet import LiveFleet
from tests.support.onnx_engine import OnnxTestEngine
from tests.support.waiting import WAIT_S, wait_until

FLEET = {
    "pi-kitchen": ("rpi4", ["seg", "depth"]),
    "pi-garage": ("rpi4", ["seg", "depth"]),
    "pi-porch": ("rpi4", ["seg", "depth"]),
    "lab-x86": ("x86", ["seg", "normals", "edges"]),
    "cam-3": ("rpi3", ["count"]),
}
PNG = b"\x89PNG\r\n\x1a\n"


def test_screenshots_of_the_three_pages(live: LiveFleet, page: Page, tmp_path: Path) -> None:
    out = Path(os.environ.get("EDGECUT_SCREENSHOTS_DIR") or tmp_path)
    for device, (cls, tasks) in FLEET.items():
        live.agent(device, tasks, cls)
    for device, (_, tasks) in FLEET.items():
        live.wait_serving(device, tasks)
    live.agent("pi-attic", ["seg", "depth"], "rpi4")  # joins late: its model comes from the store
    live.wait_serving("pi-attic", ["seg", "depth"])
    live.command("lab-x86", "set_tasks", tasks=["seg", "normals"])
    live.wait_serving("lab-x86", ["seg", "normals"])
    wait_until(lambda: all(live.registry.device(d)["telemetry"].get("inference_count") for d in live.agents))

    # an upgrade: the new base model's seg+depth variant is slow on the Pis
    engine = OnnxTestEngine(
        live.root / "engine-v2", base_model_id="test-mtl-v2", faults={("depth", "seg"): "slow"}
    )
    live.restart_server(engine)
    assert live.server.rollouts is not None
    rollouts = live.server.rollouts
    wait_until(lambda: len(rollouts.rollouts()) == 3, 4 * WAIT_S)
    wait_until(lambda: all(r["state"] != "canary" for r in rollouts.rollouts()), 4 * WAIT_S)
    states = {r["device_class"]: r["state"] for r in rollouts.rollouts()}
    assert states == {"rpi4": "rolled_back", "x86": "promoted", "rpi3": "promoted"}
    live.stop_agent("cam-3")  # one device offline, as fleets have
    (rpi4,) = [r for r in rollouts.rollouts() if r["device_class"] == "rpi4"]
    (canary,) = rpi4["canaries"]
    wait_until(lambda: live.serving(canary) == rpi4["baseline_artifact"])
    assert live.command(canary, "pin")["state"] == "ok"  # the operator keeps it on the trusted model
    history = live.server.history
    assert history is not None
    wait_until(lambda: len(history.telemetry(canary)) >= 30)

    shots = {
        "fleet": "/fleet",
        "device": f"/devices/{canary}",
        "builds": "/builds",
    }
    for name, path in shots.items():
        page.goto(live.url + path)
        expect(page.locator("#live")).to_have_text("live")
        if name == "device":  # the charts have drawn the telemetry history
            wait_until(lambda: int(page.locator("#chart-latency").get_attribute("data-points") or 0) >= 30)
        target = out / f"dashboard-{name}.png"
        page.screenshot(path=str(target), full_page=True)
        data = target.read_bytes()
        assert data.startswith(PNG) and len(data) > 20_000, (target, len(data))
