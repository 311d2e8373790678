"""Headless Chromium (Debian's `chromium` package) driven by Playwright against a running fleet.

Playwright never downloads a browser here: it launches /usr/bin/chromium (`executable_path`). When
that is missing the browser tests skip and say so (`make chromium` or .ci/run installs it). One Chromium
serves the package's tests, each in a fresh context (its own cookies and storage), without its
background services: the closed network refuses their connections, and they would only slow the tests
down.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgecut.broker import EmbeddedBroker
from edgecut.server.fleet.jobs.rollout_policy import RolloutSettings
from tests.support.live_fleet import LiveFleet, running_fleet
from tests.support.waiting import WAIT_S

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# a canary must answer 10 requests on a new variant and be watched 1 s after it swapped
# latency slack 5 ms: on a loaded 2-core machine these 0.1 ms test models show p95 jitter of about 2 ms
# (a sound variant was rolled back at 2.1 ms against 1.9 ms); the "slow" variant runs about 20 ms
ROLLOUT = RolloutSettings(
    observe_s=1.0, min_inferences=10, timeout_s=4 * WAIT_S, canary_fraction=0.25, latency_slack_ms=5.0
)


def chromium_path() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="package")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the browser tests (skips with the reason when it is absent); each test
    gets a fresh context of it from `page`. Launching one per test cost about a second each."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("Debian's chromium is not installed (run `make chromium`; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[object]:
    """A Playwright page in a fresh browser context: its own cookies, storage and cache, as a new profile."""
    context = chromium.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(WAIT_S * 1000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def live(tmp_path: Path, broker: EmbeddedBroker) -> Iterator[LiveFleet]:
    with running_fleet(tmp_path, broker.url, rollout=ROLLOUT) as fleet:
        yield fleet
