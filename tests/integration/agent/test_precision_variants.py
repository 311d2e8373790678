"""Precision variants end to end (issue 30): a real broker, the real fleet server (store, registry,
signer, gRPC DownloadModel) and real agents. The build comes in fp32 and int8 (the variant engine:
one of the two carries more compute); the device downloads both, times them on its own CPU, serves
the faster one and reports both timings, which the server records."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgecut import topics
from edgecut.broker import EmbeddedBroker
from edgecut.server.fleet.app import FleetServer
from edgecut.v1 import fleet_pb2
from tests.support.agent_helpers import publish_as, serving, wait_serving, wait_until
from tests.support.fleet_server import start_server
from tests.support.variant_engine import VariantEngine

pytestmark = pytest.mark.integration
TASKS = ["seg", "depth"]


@pytest.fixture
def start_fleet(tmp_path: Path, broker: EmbeddedBroker) -> Iterator[Any]:
    servers: list[FleetServer] = []

    def start(engine: VariantEngine) -> FleetServer:
        servers.append(start_server(tmp_path / "fleet", engine, broker.url))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def _swap(server: FleetServer, device_id: str, artifact_id: str) -> dict[str, Any]:
    assert server.registry is not None
    reg = server.registry
    return wait_until(
        lambda: next(
            (r for r in reg.offers.swaps(device_id) if r["ok"] and r["artifact_id"] == artifact_id), None
        )
    )


def _signed_variants(server: FleetServer, device_id: str) -> list[dict[str, Any]]:
    """The variants of the manifest the device verified for the model it serves (its provenance)."""
    assert server.registry is not None
    dev = server.registry.devices.get(device_id) or {}
    return list(((dev.get("provenance") or {}).get("manifest") or {}).get("variants") or [])


@pytest.mark.parametrize("int8", ["faster", "slower"])
def test_a_device_gets_both_precisions_serves_the_faster_and_reports_both_timings(
    make_agent, start_fleet, tmp_path: Path, int8: str
) -> None:
    server = start_fleet(VariantEngine(tmp_path / "engine", int8=int8))  # type: ignore[arg-type]
    want = "int8" if int8 == "faster" else "fp32"
    agent = make_agent(tasks=TASKS)
    aid = wait_serving(agent, TASKS)
    assert agent.status().precision == want
    report = _swap(server, agent.device_id, aid)
    assert report["precision"] == want
    timings = {t["precision"]: t for t in report["timings"]}
    assert set(timings) == {"fp32", "int8"} and all(
        t["median_ms"] > 0 and t["runs"] >= 15 for t in timings.values()
    )
    assert min(timings, key=lambda p: timings[p]["median_ms"]) == want
    [variant] = wait_until(lambda: _signed_variants(server, agent.device_id))
    assert variant["precision"] == "int8" and variant["artifact_id"] == timings["int8"]["artifact_id"]
    assert variant["artifact_id"] != aid and server.store.exists(variant["artifact_id"])
    # the class's latency model learnt both precisions from the swap report's timings
    assert {"fp32", "int8"} <= set(wait_until(lambda: server.policy.latency.observed("x86")))
    assert server.registry is not None
    wait_until(
        lambda: (
            ((server.registry.devices.get(agent.device_id) or {}).get("telemetry") or {}).get("precision")
            == want
        )
    )
    # another device with the same needs: a cache hit, offered the same signed variants
    other = make_agent(tasks=TASKS)
    assert wait_serving(other, TASKS) == aid and other.status().precision == want
    assert wait_until(lambda: _signed_variants(server, other.device_id)) == [variant]


def test_an_agent_that_ignores_variants_serves_the_fp32_model(
    make_agent, start_fleet, tmp_path: Path
) -> None:
    """The manifest's own artifact stays the fp32 model: an agent that takes no variants (an older
    agent ignores the field; this one is told to) downloads and serves it alone."""
    server = start_fleet(VariantEngine(tmp_path / "engine", int8="faster"))
    agent = make_agent(tasks=TASKS, variants=False)
    aid = wait_serving(agent, TASKS)
    st = agent.status()
    assert st.precision == "fp32" and st.serving_file_id == aid
    report = _swap(server, agent.device_id, aid)
    assert report["precision"] == "fp32" and report["timings"] == []
    [variant] = _signed_variants(server, agent.device_id)  # offered all the same
    assert not agent.store.has(variant["artifact_id"])


def test_refinements_carry_their_own_variants_and_a_replayed_older_offer_is_stale(
    make_agent, start_fleet, tmp_path: Path, attacker, caplog: pytest.LogCaptureFixture
) -> None:
    """The quick model's genuine offer, with its own variants, replayed (retained) after the device took
    refinement 1 in int8: refused as stale (offer_seq), live and after a restart, which serves the
    refinement in the precision that served."""
    caplog.set_level(logging.INFO, logger="edgecut.agent")
    start_fleet(VariantEngine(tmp_path / "engine", int8="faster", refinements=1))
    offers: list[fleet_pb2.ModelReady] = []
    attacker.on_message = lambda c, u, m: offers.append(fleet_pb2.ModelReady.FromString(m.payload))
    attacker.subscribe(topics.device_topic("dev0", topics.MODEL), 1)
    agent = make_agent(tasks=TASKS)
    assert agent.device_id == "dev0"

    def refinement(a: Any) -> int:
        prov = a.status().provenance_json
        return int(json.loads(prov).get("refinement", 0)) if prov else -1

    wait_until(lambda: refinement(agent) == 1)
    refined, refined_file = serving(agent), agent.status().serving_file_id
    assert agent.status().precision == "int8" and refined_file != refined
    quick = next(
        o for o in offers if o.manifest and fleet_pb2.Manifest.FromString(o.manifest).refinement == 0
    )
    quick_variants = {v.artifact_id for v in fleet_pb2.Manifest.FromString(quick.manifest).variants}
    assert quick_variants and refined_file not in quick_variants  # the refinement's own int8 file

    def refusals() -> int:
        return sum(
            "stale or replayed" in r.getMessage() and quick.artifact_id[:12] in r.getMessage()
            for r in caplog.records
        )

    publish_as(attacker, agent.device_id, topics.MODEL, quick.SerializeToString(), retain=True)
    try:
        wait_until(lambda: refusals() >= 1 or serving(agent) == quick.artifact_id)
        assert serving(agent) == refined and agent.status().serving_file_id == refined_file
        agent.stop()
        again = make_agent(device_id=agent.device_id, state_dir=agent.settings.state_dir, tasks=TASKS)
        wait_until(lambda: refusals() >= 2)
        st = again.status()
        assert st.artifact_id == refined and st.precision == "int8" and st.serving_file_id == refined_file
    finally:
        publish_as(attacker, agent.device_id, topics.MODEL, b"", retain=True)
