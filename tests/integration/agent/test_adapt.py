"""The agent's statistics path end to end (issue 31): a real broker, a real gRPC DownloadModel and real
agents. The fleet's side (the engine's companion, the signed `Manifest.statistics`) is faked here as
the other agent tests fake offers: the statistics companion is exported from a small torch model with
`export_statistics_model`, and the offer is signed with the test fleet key."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import paho.mqtt.client as mqtt
import pytest
from onnx import numpy_helper

from edgecut import topics
from edgecut.agent.agent import Agent
from edgecut.broker import EmbeddedBroker
from edgecut.norm_stats import from_proto
from edgecut.v1 import fleet_pb2
from tests.support.agent_helpers import publish_as, serving, signed_offer, wait_serving, wait_until
from tests.support.download_faults import DownloadServicer, start_download_server
from tests.support.onnx_models import artifact_id, build_model

pytestmark = pytest.mark.integration
TASKS = ["seg", "depth"]
SIZE = 32


@pytest.fixture(scope="module")
def companion(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[str]]:
    """A statistics companion for SIZE x SIZE inputs, and the layers its outputs cover (in order)."""
    import torch

    from edgecut.server.cut.statistics import export_statistics_model
    from edgecut.server.mtl import build_model as build_torch_model

    torch.manual_seed(0)
    model = build_torch_model("resnet-mtl", input_size=SIZE, widths=[8, 8, 16, 16], head_width=8).eval()
    path = export_statistics_model(model, tmp_path_factory.mktemp("stats") / "stats.onnx")
    names = [o.name for o in onnx.load(str(path)).graph.output]
    return path.read_bytes(), [n[: -len(".mean")] for n in names if n.endswith(".mean")]


@dataclass
class FakeFleet:
    """The fleet's two channels to a device: signed offers on the broker, bytes over gRPC."""

    servicer: DownloadServicer
    address: str
    client: mqtt.Client
    stats: list[tuple[str, fleet_pb2.StatsSummary, bool]]  # (device id, summary, retained)
    swaps: list[fleet_pb2.SwapReport]

    def offer(
        self, agent: Agent, model: bytes, stats: bytes | None, stats_id: str = "", **manifest: Any
    ) -> str:
        """Serve `model` (and its companion) and offer them to `agent`, signed (with the `manifest` fields
        given, e.g. adapted_from_sequence); returns the model's id."""
        aid = self.servicer.add(model)
        fields: dict[str, Any] = {"tasks": TASKS, "grpc_address": self.address, **manifest}
        if stats is not None:
            sid = self.servicer.add(stats, stats_id or None)
            digest = stats_id or sid
            fields["statistics"] = fleet_pb2.ModelVariant(
                artifact_id=sid, sha256=digest, size_bytes=len(stats), precision="stats"
            )
        ready = signed_offer(model, agent.device_id, agent.tasks.seq, **fields)
        publish_as(self.client, agent.device_id, topics.MODEL, ready.SerializeToString())
        return aid

    def summaries(self, device_id: str) -> list[fleet_pb2.StatsSummary]:
        return [s for d, s, _ in self.stats if d == device_id]


@pytest.fixture
def fleet(broker: EmbeddedBroker) -> Iterator[FakeFleet]:
    servicer = DownloadServicer()
    server, address = start_download_server(servicer)
    stats: list[tuple[str, fleet_pb2.StatsSummary, bool]] = []
    swaps: list[fleet_pb2.SwapReport] = []

    def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        device_id, leaf = m.topic.split("/")[-2:]
        if leaf == topics.STATS:
            stats.append((device_id, fleet_pb2.StatsSummary.FromString(m.payload), bool(m.retain)))
        elif leaf == topics.SWAP:
            swaps.append(fleet_pb2.SwapReport.FromString(m.payload))

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fleet-stand-in")
    c.on_message = on_message
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    for leaf in (topics.STATS, topics.SWAP):
        c.subscribe(topics.device_topic("+", leaf), 1)
    yield FakeFleet(servicer, address, c, stats, swaps)
    c.disconnect()
    c.loop_stop()
    server.stop(0)


def _adapt(agent: Agent) -> dict[str, Any]:
    return dict(json.loads(agent.status().adapt_json or "{}"))


def _infer(agent: Agent, batches: int, seed: int = 0, measured: bool = True) -> None:
    """`batches` batches of 16 dim inputs through the agent; with `measured`, each statistics run (one per
    `adapt_every` inputs) is waited for."""
    rng = np.random.default_rng(seed)
    every = agent.adapter.every
    before = _adapt(agent).get("measured", 0)
    for i in range(batches):
        agent.infer(rng.uniform(0, 0.4, (16, 3, SIZE, SIZE)).astype(np.float32))
        if measured and (i + 1) * 16 % every == 0:
            wait_until(lambda before=before: _adapt(agent)["measured"] > before)
            before = _adapt(agent)["measured"]


def _connected(agent: Agent) -> None:
    wait_until(lambda: agent.status().broker_connected)


def test_a_device_with_adapt_off_neither_downloads_the_companion_nor_sends_statistics_and_one_with_adapt_on_does(
    make_agent, fleet: FakeFleet, companion: tuple[bytes, list[str]]
) -> None:
    stats, layers = companion
    model = build_model(TASKS, size=SIZE, seed=1)
    off = make_agent(tasks=TASKS)
    on = make_agent(tasks=TASKS, adapt=True, adapt_images=32, adapt_every=16, adapt_cpu_share=1.0)
    for agent in (off, on):
        _connected(agent)
        aid = fleet.offer(agent, model, stats)
        assert wait_serving(agent, TASKS) == aid
    sid = next(a for a, data in fleet.servicer.blobs.items() if data == stats)
    wait_until(lambda: _adapt(on).get("statistics") == sid)
    _infer(off, 4, measured=False)
    _infer(on, 2)
    [summary] = wait_until(lambda: fleet.summaries(on.device_id))
    assert [n.layer for n in summary.layers] == layers and layers[0] == "input" and len(layers) > 5
    assert summary.images == 32 and summary.sequence > 0 and summary.artifact_id == aid
    input_mean = from_proto(summary)["input"][0]
    assert np.allclose(input_mean, 0.2, atol=0.02)  # what the dim inputs were: uniform in [0, 0.4)
    assert not any(retained for _, _, retained in fleet.stats)
    # the device with adapt off: nothing on `stats`, no companion fetched, nothing held
    assert fleet.summaries(off.device_id) == [] and not off.store.has(sid)
    assert off.status().adapt is False and off.status().adapt_json == ""
    assert on.store.has(sid) and on.status().adapt is True
    st = _adapt(on)
    assert st["summaries"] == 1 and st["measured"] == 32 and st["skipped"] == 0 and st["held"] == 16


def test_the_summary_sequence_survives_a_restart(
    make_agent, fleet: FakeFleet, companion: tuple[bytes, list[str]]
) -> None:
    stats, _ = companion
    agent = make_agent(tasks=TASKS, adapt=True, adapt_images=16, adapt_every=16, adapt_cpu_share=1.0)
    _connected(agent)
    aid = fleet.offer(agent, build_model(TASKS, size=SIZE, seed=1), stats)
    wait_serving(agent, TASKS)
    wait_until(lambda: _adapt(agent).get("statistics"))
    _infer(agent, 2)
    wait_until(lambda: len(fleet.summaries(agent.device_id)) == 2)
    agent.stop()
    again = make_agent(
        device_id=agent.device_id,
        state_dir=agent.settings.state_dir,
        tasks=TASKS,
        adapt=True,
        adapt_images=16,
        adapt_every=16,
        adapt_cpu_share=1.0,
    )
    assert serving(again) == aid  # restored from disk, with its companion (kept beside it)
    wait_until(lambda: _adapt(again).get("statistics"))
    _infer(again, 1, seed=5)
    wait_until(lambda: len(fleet.summaries(agent.device_id)) == 3)
    seqs = [s.sequence for s in fleet.summaries(agent.device_id)]
    assert seqs == sorted(set(seqs)) and json.loads(
        (agent.settings.state_dir / "adapt.json").read_text()
    ) == {"sequence": seqs[-1]}


def test_a_companion_whose_bytes_do_not_match_the_signed_manifest_is_refused(
    make_agent, fleet: FakeFleet, companion: tuple[bytes, list[str]]
) -> None:
    stats, _ = companion
    agent = make_agent(tasks=TASKS, adapt=True, adapt_images=16, adapt_cpu_share=1.0)
    _connected(agent)
    signed_sha = "5" * 64  # what the signed manifest names; the server holds other bytes under that id
    aid = fleet.offer(agent, build_model(TASKS, size=SIZE, seed=1), stats, stats_id=signed_sha)
    assert wait_serving(agent, TASKS) == aid  # the model serves whatever happens to its companion
    note = wait_until(lambda: "refused" in _adapt(agent)["note"] and _adapt(agent)["note"])
    assert "hashes to" in note or "sha256" in note
    assert not _adapt(agent)["statistics"]
    assert not agent.store.has(signed_sha) and not agent.store.part_path(signed_sha).exists()
    _infer(agent, 2, measured=False)
    assert _adapt(agent)["measured"] == 0 and fleet.summaries(agent.device_id) == []


def _edit(model: bytes, **scales: float) -> bytes:
    """`model` with the named heads' weights multiplied (a model that predicts otherwise)."""
    m = onnx.load_from_string(model)
    for init in m.graph.initializer:
        if init.name in scales:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * scales[init.name], init.name))
    out = io.BytesIO()
    onnx.save(m, out)
    return out.getvalue()


def _restamped(companion: bytes) -> bytes:
    """The same statistics companion under another id (another model's companion)."""
    m = onnx.load_from_string(companion)
    m.doc_string = "another build"
    return m.SerializeToString()


def test_the_proxy_rolls_back_a_clearly_worse_adapted_model_but_never_a_normal_refinement(
    make_agent, fleet: FakeFleet, companion: tuple[bytes, list[str]]
) -> None:
    stats, _ = companion
    sid = artifact_id(stats)
    agent = make_agent(tasks=TASKS, adapt=True, adapt_cpu_share=1.0)
    _connected(agent)
    first = build_model(TASKS, size=SIZE, seed=1)
    a = fleet.offer(agent, first, stats)
    wait_until(lambda: serving(agent) == a and _adapt(agent).get("statistics"))
    _infer(agent, 4)  # the recent inputs the proxy compares on
    # a normal refinement whose every head says the opposite of the model it replaces: under a strong
    # shift a correct new model disagrees with the old, largely wrong one; it is not judged, and serves
    normal = _edit(first, w_seg=-1.0, w_depth=-1.0)
    n = fleet.offer(agent, normal, stats)
    report = wait_until(lambda: next((r for r in fleet.swaps if r.artifact_id == n), None))
    assert report.ok and serving(agent) == n
    assert _adapt(agent)["proxy"]["note"] == "no swap checked yet"
    # an adapted model (made from this device's summary) that predicts nearly the same passes
    close = fleet.offer(agent, _edit(normal, w_depth=1.01), stats, adapted_from_sequence=7)
    wait_until(lambda: serving(agent) == close)
    proxy = wait_until(lambda: _adapt(agent)["proxy"] if not _adapt(agent)["proxy"]["note"] else None)
    assert proxy["agreement"] > 0.9 and proxy["images"] == 16
    # an adapted one whose every head says the opposite: rolled back by the proxy, the close one serves on
    worse = fleet.offer(agent, _edit(normal, w_seg=-2.0, w_depth=-2.0), stats, adapted_from_sequence=8)
    report = wait_until(lambda: next((r for r in fleet.swaps if r.artifact_id == worse), None))
    assert not report.ok and "rolled back by the proxy check" in report.reason
    st = agent.status()
    assert st.artifact_id == close and st.state == "rolled_back" and "proxy" in st.state_reason
    assert _adapt(agent)["proxy"]["agreement"] < 0.5
    assert worse in agent.store.bad  # the same offer is not taken again
    # the rolled-back-to model keeps its companion: a later swap does not prune it, nothing is fetched
    assert agent.store.served(close).get("statistics") == sid
    fetched = sum(1 for r, _ in fleet.servicer.requests if r == sid)
    later = fleet.offer(agent, build_model(TASKS, size=SIZE, seed=3), _restamped(stats))
    wait_until(lambda: serving(agent) == later and _adapt(agent).get("statistics") not in ("", sid))
    assert agent.store.has(sid) and agent.store.served(close).get("statistics") == sid
    assert sum(1 for r, _ in fleet.servicer.requests if r == sid) == fetched


def test_a_companion_download_that_fails_for_a_network_reason_is_retried_without_a_new_offer(
    make_agent, fleet: FakeFleet, companion: tuple[bytes, list[str]]
) -> None:
    stats, _ = companion
    sid = artifact_id(stats)
    agent = make_agent(tasks=TASKS, adapt=True, adapt_images=16, adapt_cpu_share=1.0)
    _connected(agent)
    fleet.servicer.unavailable[sid] = 4  # every attempt of the first download (Downloader: 4 attempts)
    aid = fleet.offer(agent, build_model(TASKS, size=SIZE, seed=1), stats)
    assert wait_serving(agent, TASKS) == aid  # the model serves whatever happens to its companion
    wait_until(lambda: _adapt(agent)["statistics"] == sid, timeout=120)  # ~8 s of backoff, then the retry
    assert serving(agent) == aid and len(fleet.swaps) == 1  # no new offer, no new swap
    # more calls than the downloader makes in one fetch (4): the agent tried again by itself
    assert sum(1 for r, _ in fleet.servicer.requests if r == sid) >= 5
    _infer(agent, 4)
    assert wait_until(lambda: fleet.summaries(agent.device_id))[0].artifact_id == aid
