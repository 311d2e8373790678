"""The fleet page in Chromium: every agent with its tasks and model, filters, live updates without reload."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

from tests.support.live_fleet import LiveFleet

FLEET = {
    "pi-kitchen": ("rpi4", ["seg", "depth"]),
    "pi-garage": ("rpi4", ["seg", "depth"]),
    "lab-x86": ("x86", ["seg", "normals", "edges"]),
    "cam-3": ("rpi3", ["count"]),
}


def test_the_fleet_page_lists_every_agent_with_its_tasks_and_model(live: LiveFleet, page: Page) -> None:
    for device, (cls, tasks) in FLEET.items():
        live.agent(device, tasks, cls)
    served = {d: live.wait_serving(d, tasks) for d, (_, tasks) in FLEET.items()}
    page.goto(live.url + "/fleet")
    for device, (cls, tasks) in FLEET.items():
        row = page.locator(f"#dev-{device}")
        expect(row.locator("[data-field=tasks]")).to_have_text(",".join(tasks))
        expect(row.locator("[data-field=model]")).to_contain_text(served[device][:12])
        expect(row).to_contain_text(cls)
        expect(row).to_contain_text("online")
    expect(page.locator("#count-online")).to_have_text("4")

    page.select_option("select[name=device_class]", "rpi4")  # the filter submits itself
    expect(page).to_have_url(live.url + "/fleet?status=&device_class=rpi4&task=")
    expect(page.locator("tr[data-device]")).to_have_count(2)
    page.select_option("select[name=device_class]", "")
    page.select_option("select[name=task]", "count")
    expect(page.locator("tr[data-device]")).to_have_count(1)
    expect(page.locator("#dev-cam-3")).to_be_visible()


def test_the_page_follows_the_fleet_without_a_reload(live: LiveFleet, page: Page) -> None:
    live.agent("first", ["seg"])
    live.wait_serving("first", ["seg"])
    page.goto(live.url + "/fleet")
    expect(page.locator("#live")).to_have_text("live")
    page.evaluate("window.__notReloaded = true")

    live.agent("late", ["depth"], "rpi4")  # joins while the page is open
    aid = live.wait_serving("late", ["depth"])
    expect(page.locator("#dev-late [data-field=model]")).to_contain_text(aid[:12])
    expect(page.locator("#count-total")).to_have_text("2")

    live.stop_agent("first")  # says OFFLINE (a crash would leave it to the last will)
    expect(page.locator("#dev-first")).to_have_attribute("data-status", "offline")
    expect(page.locator("#count-offline")).to_have_text("1")
    still: Any = page.evaluate("window.__notReloaded")
    assert still is True
