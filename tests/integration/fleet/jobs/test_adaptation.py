"""Issue 31's adaptation job against real processes: a fleet server in its own process (the ONNX test engine
with statistics companions, `StatsEngine.adapt`) and a real broker (EDGECUT_EMBEDDED_BROKER: mosquitto
and iotcore).

A device's summary leads to a signed offer of a model adapted to its statistics bucket, with
`adapted_from_sequence` set; a second device in that bucket gets the same model without a second build;
a summary that stays in its bucket builds nothing; a device that moves is adapted again at most once
per `limits.adapt_min_interval_s`; a refinement of the base model reaches adapted devices only adapted
again, never over their adapted model; a forged or replayed summary schedules nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgecut import norm_stats, topics
from edgecut.broker import EmbeddedBroker
from edgecut.envelopes import open_offer
from edgecut.server.fleet.state.job_record import JobRecord
from edgecut.signing import Keyring
from edgecut.v1 import fleet_pb2 as pb
from tests.integration.fleet.link.test_statistics_summaries import Server
from tests.support.fleet_server import Device, download, stub
from tests.support.keys import fleet_key
from tests.support.replica import ReplicaProcess
from tests.support.stats_engine import summary_of
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration
DIM, BRIGHT = 0.4, 1.0  # the device's images: uniform noise times this (a dim garage, daylight)


class AdaptServer(Server):
    """The summaries test's server, with refinements held until the test lets them run."""

    def __init__(self, tmp: Path, broker: EmbeddedBroker, interval_s: float) -> None:
        super().__init__(tmp, broker)
        self.settings["limits"]["adapt_min_interval_s"] = interval_s

    def start(self) -> ReplicaProcess:
        extra = ("--statistics", "--refinements", "1", "--hold-refinements")
        self.proc = ReplicaProcess(self.settings, self.state_dir / "builds.log", 0.0, {}, extra)
        return self.proc

    def adaptations(self) -> list[JobRecord]:
        return [r for r in self.reg().jobs.all() if r.kind == "adapt"]


def _server(tmp: Path, broker: EmbeddedBroker, interval_s: float) -> Iterator[AdaptServer]:
    s = AdaptServer(tmp, broker, interval_s)
    s.start()
    try:
        yield s
    finally:
        s.stop()
        if s.registry is not None:
            s.registry.close()


@pytest.fixture
def limited(tmp_path: Path, broker: EmbeddedBroker) -> Iterator[AdaptServer]:
    yield from _server(tmp_path, broker, 3600.0)


@pytest.fixture
def unlimited(tmp_path: Path, broker: EmbeddedBroker) -> Iterator[AdaptServer]:
    yield from _server(tmp_path, broker, 0.0)


def _offer(device: Device) -> pb.Manifest:
    """The next offer to the device, its signature checked as the agent checks it."""
    keys = Keyring.from_config([fleet_key().public_text], [], "fleet_keys")
    return open_offer(keys, device.model_ready())


def _no_offer(device: Device, seconds: float = 1.5) -> None:
    with pytest.raises(TimeoutError):
        device.model_ready(timeout=seconds)


def _companion(server: Server, manifest: pb.Manifest, tmp: Path) -> Path:
    assert server.proc is not None and manifest.statistics.artifact_id
    channel, fleet = stub(server.proc.grpc_address)
    with channel:
        data = download(fleet, manifest.statistics.artifact_id)
    path = tmp / f"{manifest.statistics.artifact_id[:12]}.onnx"
    path.write_bytes(data)
    return path


def _summary(
    companion: Path, device: str, artifact_id: str, sequence: int, scale: float, seed: int = 0
) -> bytes:
    """A summary of 16 of the device's images (uniform noise times `scale`), as an agent sends it."""
    acc = norm_stats.Accumulator()
    for batch in range(2):
        images = np.random.default_rng(1000 * seed + 10 * sequence + batch).random((8, 3, 64, 64)) * scale
        acc.add(summary_of(companion, images), len(images))
    return norm_stats.to_proto(acc.layers(), device, artifact_id, acc.images, sequence, 0).SerializeToString()


def test_an_adapted_model_is_offered_shared_by_its_bucket_and_kept_over_a_refinement(
    limited: AdaptServer, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    server = limited
    one, two = Device(broker.url, "dev-1"), Device(broker.url, "dev-2")
    try:
        one.needs(["seg"], seq=1)
        quick = _offer(one)
        assert quick.adapted_from_sequence == 0
        companion = _companion(server, quick, tmp_path)

        # a dim device's summary: a signed offer of a model adapted to it, flagged with that summary
        one.publish(topics.STATS, _summary(companion, "dev-1", quick.artifact_id, 1, DIM))
        adapted = _offer(one)
        assert adapted.artifact_id != quick.artifact_id
        assert adapted.adapted_from_sequence == 1
        assert adapted.parent_artifact_id == quick.artifact_id and adapted.build_key == quick.build_key
        assert adapted.statistics.artifact_id  # exported with its companion, as the engine does
        assert len(server.adaptations()) == 1

        # a second dim device gets the same adapted model, without a second build
        two.needs(["seg"], seq=1)
        assert _offer(two).artifact_id == quick.artifact_id
        two.publish(topics.STATS, _summary(companion, "dev-2", quick.artifact_id, 7, DIM, seed=2))
        shared = _offer(two)
        assert shared.artifact_id == adapted.artifact_id and shared.adapted_from_sequence == 7
        assert len(server.adaptations()) == 1
        assert "without a build" in server.log()

        # the adapted model's own summary, still dim: it stays in its bucket, nothing is built
        mine = _companion(server, adapted, tmp_path)
        one.publish(topics.STATS, _summary(mine, "dev-1", adapted.artifact_id, 2, DIM, seed=3))
        wait_until(lambda: "summary 2 of dev-1 stays in bucket" in server.log())
        # daylight: out of its bucket, but adapted less than the interval ago: not yet
        one.publish(topics.STATS, _summary(mine, "dev-1", adapted.artifact_id, 3, BRIGHT))
        wait_until(lambda: "summary 3 of dev-1 moved to bucket" in server.log())
        _no_offer(one)
        assert len(server.adaptations()) == 1

        # the base model's refinement lands: both devices get it adapted again, never the plain one
        (server.state_dir / "refine").touch()
        again = _offer(one)
        assert again.artifact_id not in (adapted.artifact_id, quick.artifact_id)
        assert again.adapted_from_sequence == 1 and again.refinement == 1
        refined = again.parent_artifact_id
        assert refined != quick.artifact_id
        assert _offer(two).artifact_id == again.artifact_id
        assert len(server.adaptations()) == 2
        # a device asking again (a restart) keeps its adapted model
        one.needs(["seg"], seq=2)
        assert _offer(one).artifact_id == again.artifact_id
        dev = server.reg().devices.get("dev-1")
        assert dev is not None and dev["offered_artifact_id"] == again.artifact_id
    finally:
        one.close()
        two.close()


def test_forged_and_replayed_summaries_build_nothing_and_a_moved_device_is_adapted_again(
    unlimited: AdaptServer, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    server = unlimited
    one, other = Device(broker.url, "dev-1"), Device(broker.url, "dev-2")
    try:
        one.needs(["seg"], seq=1)
        quick = _offer(one)
        companion = _companion(server, quick, tmp_path)
        dim = _summary(companion, "dev-1", quick.artifact_id, 5, DIM)
        forged = [
            _summary(companion, "dev-2", quick.artifact_id, 5, DIM),  # another device's id
            _summary(companion, "dev-1", "c" * 64, 5, DIM),  # a model never offered
        ]
        for payload in forged:
            one.publish(topics.STATS, payload)
        # on dev-2's topic, about a model never offered to dev-2
        other.publish(topics.STATS, _summary(companion, "dev-2", quick.artifact_id, 5, DIM))
        wait_until(lambda: server.log().count("statistics summary from") >= 3)
        _no_offer(one)
        _no_offer(other, 0.1)
        assert server.adaptations() == []

        one.publish(topics.STATS, dim)  # the real one: adapted
        assert _offer(one).adapted_from_sequence == 5
        one.publish(topics.STATS, dim)  # replayed: refused, nothing scheduled
        wait_until(lambda: "(replayed)" in server.log())
        _no_offer(one)
        assert len(server.adaptations()) == 1

        # the camera moved to daylight, and no interval holds it: adapted again, to the new bucket
        one.publish(topics.STATS, _summary(companion, "dev-1", quick.artifact_id, 6, BRIGHT))
        moved = _offer(one)
        assert moved.adapted_from_sequence == 6 and moved.parent_artifact_id == quick.artifact_id
        jobs = server.adaptations()
        assert len(jobs) == 2 and all(j.state == "done" for j in jobs)
        assert len({j.spec["adapt"]["bucket"] for j in jobs}) == 2
    finally:
        one.close()
        other.close()
