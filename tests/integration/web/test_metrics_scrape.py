"""/metrics scraped from a running server before and after a real build, download and hot-swap."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.live_fleet import LiveFleet
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def test_counters_move_across_a_build_and_a_swap(live: LiveFleet) -> None:
    before = scrape(live.url)
    assert before["edgecut_builds_total{result=done}"] == 0
    live.agent("dev-a", ["seg", "depth"])
    aid = live.wait_serving("dev-a", ["seg", "depth"])
    wait_until(lambda: scrape(live.url)["edgecut_swaps_total{result=ok}"] >= 1)
    after = scrape(live.url)

    def moved(name: str) -> float:
        return after[name] - before.get(name, 0.0)

    assert moved("edgecut_needs_received_total{result=accepted}") >= 1
    assert moved("edgecut_build_requests_total{source=build}") == 1
    assert moved("edgecut_builds_started_total{}") == 1
    assert moved("edgecut_builds_total{result=done}") == 1
    assert moved("edgecut_build_seconds_count{}") == 1 and after["edgecut_build_seconds_sum{}"] > 0
    assert moved("edgecut_downloads_total{result=complete}") == 1
    assert live.store_size(aid) == moved("edgecut_download_bytes_total{}")
    assert moved("edgecut_swaps_total{result=ok}") == 1
    assert after["edgecut_devices_online{device_class=x86}"] == 1

    # a second device with the same needs: answered from the store, the hit ratio moves
    live.agent("dev-b", ["seg", "depth"])
    live.wait_serving("dev-b", ["seg", "depth"])
    wait_until(lambda: scrape(live.url)["edgecut_swaps_total{result=ok}"] >= 2)
    last = scrape(live.url)
    assert last["edgecut_build_requests_total{source=cache}"] == 1
    assert last["edgecut_build_cache_hit_ratio{}"] == 0.5
    assert last["edgecut_builds_total{result=done}"] == 1  # no second build
    assert last["edgecut_devices_online{device_class=x86}"] == 2
