"""The device page in Chromium: operator commands from its controls land on a real agent and show."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.support.live_fleet import LiveFleet


def test_changing_tasks_from_the_page_makes_the_device_serve_them(live: LiveFleet, page: Page) -> None:
    live.agent("pi-desk", ["seg"], "rpi4")
    first = live.wait_serving("pi-desk", ["seg"])
    page.goto(live.url + "/devices/pi-desk")
    expect(page.locator("#device-model")).to_have_attribute("data-artifact", first)
    page.evaluate("window.__notReloaded = true")

    page.fill("#set-tasks input[name=tasks]", "seg, depth")
    page.click("#set-tasks button")
    # "sent ... waiting for the device" may last only until the ack, which a quick device beats the poll to
    expect(page.locator("#command-result")).to_have_text(re.compile(r"set_tasks (sent|done by the device)"))
    row = page.locator("#commands tr[data-command]").first
    expect(row).to_have_attribute("data-state", "ok")  # the device acknowledged it
    expect(row).to_contain_text("local")  # who: a browser on this machine, no users configured
    # the line under the controls says so too, instead of still waiting for the device
    expect(page.locator("#command-result")).to_have_text("set_tasks done by the device")
    expect(page.locator("#command-result")).to_have_attribute("data-state", "ok")

    new = live.wait_serving("pi-desk", ["seg", "depth"])  # the agent really serves it ...
    expect(page.locator("#device-model")).to_have_attribute("data-artifact", new)  # ... and the page shows it
    expect(page.locator("#device-serving-tasks")).to_have_text("depth,seg")
    expect(page.locator("#device-tasks")).to_have_text("seg,depth")
    assert page.evaluate("window.__notReloaded") is True

    page.fill("#set-tasks input[name=tasks]", "sky")  # refused by the server, with the reason
    page.click("#set-tasks button")
    expect(page.locator("#command-result")).to_contain_text("refused: unknown task 'sky'")


def test_a_rollback_from_the_page_returns_the_previous_model(live: LiveFleet, page: Page) -> None:
    agent = live.agent("pi-shed", ["seg"], "rpi4")
    previous = live.wait_serving("pi-shed", ["seg"])
    agent.set_tasks(["seg", "depth"])  # the user's change on the device: a second model
    current = live.wait_serving("pi-shed", ["seg", "depth"])
    page.goto(live.url + "/devices/pi-shed")
    expect(page.locator("#device-model")).to_have_attribute("data-artifact", current)

    page.click("#rollback button")
    expect(page.locator("#commands tr[data-command]").first).to_have_attribute("data-state", "ok")
    expect(page.locator("#device-model")).to_have_attribute("data-artifact", previous)
    expect(page.locator("#device-pin")).to_contain_text(previous[:12])  # pinned until lifted
    assert live.serving("pi-shed") == previous and agent.status().pinned_artifact_id == previous
    expect(page.locator("#swaps tr[data-artifact]").first).to_have_attribute("data-artifact", previous)

    page.click("#unpin button")  # lifting the pin: the fleet's model for seg,depth comes back
    expect(page.locator("#device-model")).to_have_attribute("data-artifact", current)
    expect(page.locator("#device-pin")).to_have_text("no")
