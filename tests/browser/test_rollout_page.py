"""A failed canary, watched on the builds page: rolled back, and the rest of the class never receives it."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.support.live_fleet import LiveFleet
from tests.support.onnx_engine import OnnxTestEngine
from tests.support.waiting import WAIT_S, wait_until

DEVICES = ["x86-a", "x86-b", "x86-c", "x86-d"]


def test_a_failed_canary_is_rolled_back_and_the_rest_never_receive_it(live: LiveFleet, page: Page) -> None:
    for d in DEVICES:
        live.agent(d, ["seg"], "x86")
    baseline = {live.wait_serving(d, ["seg"]) for d in DEVICES}
    assert len(baseline) == 1
    (old,) = baseline
    wait_until(lambda: all(live.registry.devices.get(d)["telemetry"].get("inference_count") for d in DEVICES))
    page.goto(live.url + "/builds")
    expect(page.locator("#rollouts")).to_contain_text("no rollout yet")

    # upgrade the server: the new base model's seg variant is ~100x slower on the devices
    engine = OnnxTestEngine(live.root / "engine-v2", base_model_id="test-mtl-v2", faults={("seg",): "slow"})
    live.restart_server(engine)  # same HTTP port: the open page reconnects by itself

    row = page.locator("tr[data-rollout]")
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-state", "rolled_back", timeout=4 * WAIT_S * 1000)
    expect(row).to_contain_text("rolled back")
    expect(row).to_contain_text("p95")
    assert live.server.rollouts is not None
    (r,) = live.server.rollouts.rollouts()
    candidate, (canary,) = r["candidate_artifact"], r["canaries"]
    expect(row).to_contain_text(candidate[:12])

    wait_until(lambda: live.serving(canary) == old)  # the canary serves the old model again
    assert candidate in live.swapped_to(canary)
    for d in DEVICES:
        if d == canary:
            continue
        assert live.serving(d) == old and candidate not in live.swapped_to(d)
        page.goto(f"{live.url}/devices/{d}")
        expect(page.locator("#swaps")).not_to_contain_text(candidate[:12])
        expect(page.locator("#device-model")).to_have_attribute("data-artifact", old)
    page.goto(f"{live.url}/devices/{canary}")
    expect(page.locator("#swaps tr[data-artifact]").first).to_have_attribute("data-artifact", old)
    expect(page.locator("#swaps")).to_contain_text(candidate[:12])
