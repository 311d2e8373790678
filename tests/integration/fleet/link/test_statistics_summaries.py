"""Issue 31 against real processes: a fleet server in its own process (the ONNX test engine, its builds
carrying a statistics companion) and a real broker (EDGECUT_EMBEDDED_BROKER: mosquitto and iotcore).

A device is offered a model whose signed manifest names the companion; it downloads it, measures its
own images with it and sends summaries on its `stats` topic. The server takes a summary only when it is
the device's own, about a model offered to it, of that model's layers and widths, within its rate and
newer than the last it took; a replay is refused after a restart too. A refusal answers nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecut import norm_stats, topics
from edgecut.broker import EmbeddedBroker
from edgecut.envelopes import open_offer
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.statistics import Summary
from edgecut.signing import Keyring
from edgecut.v1 import fleet_pb2 as pb
from tests.support.fleet_server import Device, download, sha256, stub
from tests.support.keys import fleet_key, fleet_key_path
from tests.support.replica import ReplicaProcess
from tests.support.stats_engine import summary_of
from tests.support.waiting import WAIT_S

pytestmark = pytest.mark.integration
BURST = 8  # summaries the device may send at once; the refill is too slow to matter within the test


class Server:
    def __init__(self, tmp: Path, broker: EmbeddedBroker) -> None:
        self.state_dir, self.broker = tmp / "server", broker
        self.settings: dict[str, Any] = {
            "state_dir": str(self.state_dir),
            "broker": broker.url,
            "grpc": "127.0.0.1:0",
            "replica_id": "srv",
            "signing_key": str(fleet_key_path()),
            "latency_probe": False,
            "limits": {"stats_burst": BURST, "stats_per_minute": 0.01},
        }
        self.proc: ReplicaProcess | None = None
        self.registry: Registry | None = None

    def start(self) -> ReplicaProcess:
        self.proc = ReplicaProcess(self.settings, self.state_dir / "builds.log", 0.0, {}, ("--statistics",))
        return self.proc

    def reg(self) -> Registry:
        if self.registry is None:  # the server's own SQLite registry, read from this process
            self.registry = Registry(f"sqlite:///{(self.state_dir / 'registry.sqlite3').resolve()}")
        return self.registry

    def log(self) -> str:
        return (self.state_dir / "replica.log").read_text(errors="replace")

    def drops(self) -> list[str]:
        """The reasons of the summaries the server dropped, in order, from its log."""
        marker = "statistics summary from dev-1 dropped ("
        return [
            line.split(marker, 1)[1].split(")", 1)[0] for line in self.log().splitlines() if marker in line
        ]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


@pytest.fixture
def server(tmp_path: Path, broker: EmbeddedBroker) -> Iterator[Server]:
    s = Server(tmp_path, broker)
    s.start()
    try:
        yield s
    finally:
        s.stop()
        if s.registry is not None:
            s.registry.close()


def _wait_taken(server: Server, artifact_id: str, sequence: int) -> Summary:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        kept = server.reg().statistics.latest("dev-1", artifact_id)
        if kept is not None and kept.sequence >= sequence:
            return kept
        time.sleep(0.1)
    raise TimeoutError(f"summary {sequence} not taken within {WAIT_S:g} s: {server.log()[-3000:]}")


def _summary(companion: Path, artifact_id: str, sequence: int, device: str = "dev-1") -> pb.StatsSummary:
    acc = norm_stats.Accumulator()
    for seed in range(2):  # two batches of the device's own (dim) images
        images = np.random.default_rng(seed + 10 * sequence).random((8, 3, 64, 64)) * 0.4
        acc.add(summary_of(companion, images), len(images))
    return norm_stats.to_proto(acc.layers(), device, artifact_id, acc.images, sequence, 0)


def _changed(msg: pb.StatsSummary, **fields: Any) -> bytes:
    out = pb.StatsSummary()
    out.CopyFrom(msg)
    for k, v in fields.items():
        setattr(out, k, v)
    return out.SerializeToString()


def test_summaries_are_taken_only_when_every_check_passes_and_replays_never(
    server: Server, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    device = Device(broker.url, "dev-1")
    try:
        device.needs(["seg"], seq=1)
        ready = device.model_ready()
        manifest = open_offer(Keyring.from_config([fleet_key().public_text], [], "fleet_keys"), ready)
        stats = manifest.statistics
        assert stats.precision == "stats" and manifest.artifact_id == ready.artifact_id
        assert server.proc is not None
        channel, fleet = stub(server.proc.grpc_address)
        with channel:
            data = download(fleet, stats.artifact_id)
        assert sha256(data) == stats.sha256 == stats.artifact_id
        companion = tmp_path / "stats.onnx"
        companion.write_bytes(data)
        aid = manifest.artifact_id

        first = _summary(companion, aid, 1)
        device.publish(topics.STATS, first.SerializeToString())
        kept = _wait_taken(server, aid, 1)
        assert kept.images == 16 and kept.summary == first.SerializeToString()

        narrow = pb.StatsSummary()
        narrow.CopyFrom(_summary(companion, aid, 5))
        narrow.layers[1].mean, narrow.layers[1].var = narrow.layers[1].mean[:4], narrow.layers[1].var[:4]
        refused = [
            (first.SerializeToString(), "replayed"),  # the same summary again (a QoS 1 redelivery, a replay)
            (_changed(_summary(companion, aid, 5), device_id="dev-2"), "wrong_device"),
            (_changed(_summary(companion, aid, 5), artifact_id="c" * 64), "not_offered"),
            (narrow.SerializeToString(), "bad_statistics"),
            (b"\x08\x01 not a summary \xff", "malformed"),
        ]
        for payload, _ in refused:
            device.publish(topics.STATS, payload)
        second = _summary(companion, aid, 2)  # lower than the refused ones' 5: they moved nothing
        device.publish(topics.STATS, second.SerializeToString())
        assert _wait_taken(server, aid, 2).summary == second.SerializeToString()
        # one device's messages are handled in order: every refusal above came before the summary taken
        assert server.drops() == [reason for _, reason in refused]
        # past its burst (BURST tokens: 7 spent), the device is refused before its summary is read
        device.publish(topics.STATS, _summary(companion, aid, 3).SerializeToString())
        device.publish(topics.STATS, _summary(companion, aid, 4).SerializeToString())
        deadline = time.monotonic() + WAIT_S
        while server.drops()[-1:] != ["rate_limited"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.drops()[len(refused) :] == ["rate_limited"]
        assert _wait_taken(server, aid, 3).sequence == 3
        with pytest.raises(TimeoutError):  # nothing is ever answered to a summary, taken or not
            device.next(topics.ERROR, timeout=1.0)

        # a restarted server (a fresh rate limit) still refuses what it took before its restart
        server.stop()
        server.start()
        device.publish(topics.STATS, _summary(companion, aid, 3).SerializeToString())
        device.publish(topics.STATS, _summary(companion, aid, 6).SerializeToString())
        assert _wait_taken(server, aid, 6).sequence == 6
        assert server.drops()[-1] == "replayed"
        assert server.reg().statistics.devices()["dev-1"]["taken"] == 4
    finally:
        device.close()
