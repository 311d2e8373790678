"""Issue 31, the fleet side: a build's statistics companion is stored with its model, signed into every
offer of that model, downloadable only by a device it was offered to; and a device's statistics summary
is taken only when every check passes (each refusal counted by its reason, nothing stored)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf.message import DecodeError, Message

from edgecut import norm_stats
from edgecut.envelopes import open_offer
from edgecut.server.fleet.jobs.outcomes import Ready
from edgecut.server.fleet.jobs.variants import store_variants
from edgecut.server.fleet.link.signer import FleetSigner
from edgecut.server.fleet.link.summaries import Summaries, digest
from edgecut.server.fleet.link.variants import statistics_for, variants_for
from edgecut.server.fleet.policy.limits import RateLimiter
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.store import LocalStore, StoredArtifact
from edgecut.server.spec import Budget, BuildSpec
from edgecut.signing import Keyring, SignatureError
from edgecut.v1 import fleet_pb2 as pb
from tests.support.keys import fleet_key
from tests.support.onnx_engine import OnnxTestEngine
from tests.support.stats_engine import StatsEngine, summary_of

SPEC = BuildSpec(("seg", "depth"), Budget(macs_fraction=0.5))


class FakeLink:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def parse(
        self, cls: type[Message], device_id: str, payload: bytes, answer: bool = True, about: str = ""
    ) -> Any:
        try:
            return cls.FromString(payload)
        except DecodeError:
            return None

    def emit(self, kind: str, device: str, **data: Any) -> None:
        self.events.append((kind, device, data))

    def results(self) -> list[str]:
        return [d["result"] for k, _, d in self.events if k == "stats"]


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[LocalStore, Registry, StoredArtifact, Path]:
    """A seg+depth build with its companion, stored as build workers store it, offered to "dev-1"."""
    store, registry = LocalStore(tmp_path / "store"), Registry(f"sqlite:///{tmp_path / 'reg.sqlite3'}")
    built = StatsEngine(tmp_path / "engine").build(SPEC, lambda *a: None)
    artifact = store.put_file(built.onnx_path, built.meta)
    store_variants(store, registry, artifact, built)
    stats = statistics_for(store, registry, artifact)
    assert stats is not None
    registry.offers.record("dev-1", artifact.meta.build_key, artifact.artifact_id, 1, {}, [stats.artifact_id])
    assert built.statistics is not None
    return store, registry, artifact, built.statistics.onnx_path


def _summary(path: Path, artifact_id: str, sequence: int, device: str = "dev-1", dim: float = 1.0) -> bytes:
    acc = norm_stats.Accumulator()
    images = np.random.default_rng(sequence).random((16, 3, 64, 64)) * dim
    acc.add(summary_of(path, images), len(images))
    return norm_stats.to_proto(acc.layers(), device, artifact_id, acc.images, sequence, 0).SerializeToString()


def test_the_companion_is_stored_with_its_model_and_signed_into_the_offer(
    fleet: tuple[LocalStore, Registry, StoredArtifact, Path],
) -> None:
    store, registry, artifact, _ = fleet
    companion = registry.statistics.companion(artifact.artifact_id)
    assert companion is not None and companion.layers == {"input": 3, "stem": 16}
    stats = statistics_for(store, registry, artifact)
    assert stats is not None and stats.meta.precision == "stats"
    assert variants_for(store, registry, artifact, "dev-1") == []  # never offered as a precision to serve
    msg, _ = FleetSigner(fleet_key()).offer(
        Ready(artifact.meta.build_key, artifact), "127.0.0.1:1", "dev-1", 1, 7, (), stats
    )
    keyring = Keyring.from_config([fleet_key().public_text], [], "fleet_keys")
    opened = open_offer(keyring, msg)
    assert opened.statistics.precision == "stats" and opened.statistics.artifact_id == stats.artifact_id
    assert opened.statistics.sha256 == stats.sha256 and opened.statistics.size_bytes == stats.size
    forged = pb.Manifest.FromString(msg.manifest)  # another file's hash swapped in: refused
    forged.statistics.sha256 = "0" * 64
    msg.manifest = forged.SerializeToString()
    with pytest.raises(SignatureError):
        open_offer(keyring, msg)


def test_the_companion_is_downloadable_only_by_a_device_it_was_offered_to(
    fleet: tuple[LocalStore, Registry, StoredArtifact, Path],
) -> None:
    _, registry, artifact, _ = fleet
    companion = registry.statistics.companion(artifact.artifact_id)
    assert companion is not None
    assert registry.offers.was_offered("dev-1", companion.statistics_id)
    assert not registry.offers.was_offered("dev-2", companion.statistics_id)


def test_a_model_without_a_companion_is_offered_without_one(tmp_path: Path) -> None:
    store, registry = LocalStore(tmp_path / "store"), Registry(f"sqlite:///{tmp_path / 'reg.sqlite3'}")
    built = OnnxTestEngine(tmp_path / "engine").build(SPEC, lambda *a: None)
    artifact = store.put_file(built.onnx_path, built.meta)
    store_variants(store, registry, artifact, built)
    assert statistics_for(store, registry, artifact) is None
    msg, _ = FleetSigner(fleet_key()).offer(
        Ready(artifact.meta.build_key, artifact), "127.0.0.1:1", "d", 1, 7
    )
    assert not pb.Manifest.FromString(msg.manifest).HasField("statistics")


def test_a_good_summary_is_taken_with_its_image_count_and_digest(
    fleet: tuple[LocalStore, Registry, StoredArtifact, Path],
) -> None:
    _, registry, artifact, path = fleet
    link = FakeLink()
    summaries = Summaries(link, registry)
    payload = _summary(path, artifact.artifact_id, 5, dim=0.4)
    summaries.on_summary("dev-1", payload)
    assert link.results() == ["taken"]
    kept = registry.statistics.latest("dev-1", artifact.artifact_id)
    assert kept is not None and (kept.sequence, kept.images) == (5, 16) and kept.summary == payload
    assert kept.digest == digest(pb.StatsSummary.FromString(payload))
    layers = norm_stats.from_proto(pb.StatsSummary.FromString(kept.summary))
    assert layers["input"][0] == pytest.approx([0.2] * 3, abs=0.01)  # the dim garage's mean brightness
    # a newer one replaces it; the device's record counts both
    summaries.on_summary("dev-1", _summary(path, artifact.artifact_id, 6))
    kept = registry.statistics.latest("dev-1", artifact.artifact_id)
    assert kept is not None and kept.sequence == 6
    assert registry.statistics.devices()["dev-1"]["taken"] == 2


def _mutated(payload: bytes, change: Any) -> bytes:
    msg = pb.StatsSummary.FromString(payload)
    change(msg)
    return msg.SerializeToString()


def test_every_refusal_is_counted_by_its_reason_and_stores_nothing(
    fleet: tuple[LocalStore, Registry, StoredArtifact, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _, registry, artifact, path = fleet
    aid = artifact.artifact_id
    good = _summary(path, aid, 10)
    other = _summary(path, aid, 10, device="dev-2")

    def narrower(m: pb.StatsSummary) -> None:
        m.layers[1].mean, m.layers[1].var = m.layers[1].mean[:-2], m.layers[1].var[:-2]

    def renamed(m: pb.StatsSummary) -> None:
        m.layers[1].layer = "trunk.bn1"

    def dropped(m: pb.StatsSummary) -> None:
        del m.layers[1]

    def nan(m: pb.StatsSummary) -> None:
        m.layers[0].mean = np.array([np.nan, 0, 0], "<f2").tobytes()

    cases = [
        (b"\xff\x00garbage", "malformed"),
        (other, "wrong_device"),  # a summary with another device's id, sent on dev-1's topic
        (_mutated(good, lambda m: setattr(m, "artifact_id", "b" * 64)), "not_offered"),
        (_mutated(good, narrower), "bad_statistics"),
        (_mutated(good, renamed), "bad_statistics"),
        (_mutated(good, dropped), "bad_statistics"),
        (_mutated(good, nan), "bad_statistics"),
        (_mutated(good, lambda m: setattr(m, "images", 0)), "bad_statistics"),
        (_mutated(good, lambda m: setattr(m, "sequence", 1 << 63)), "bad_statistics"),
        (_mutated(good, lambda m: setattr(m, "images", 15)), "bad_statistics"),  # close to per-image values
        # far in the future: would hold the device's counter there and refuse its real summaries
        (
            _mutated(good, lambda m: setattr(m, "sequence", int(time.time() * 1000) + 2 * 86_400_000)),
            "bad_statistics",
        ),
    ]
    link = FakeLink()
    summaries = Summaries(link, registry)
    with caplog.at_level("WARNING"):
        for payload, _ in cases:
            summaries.on_summary("dev-1", payload)
    assert link.results() == [reason for _, reason in cases]
    assert len([r for r in caplog.records if "dropped" in r.getMessage()]) == len(cases)  # one line each
    assert registry.statistics.latest("dev-1", aid) is None and registry.statistics.devices() == {}
    # none of them moved the device's sequence: the good one is still taken, and then never again
    summaries.on_summary("dev-1", good)
    summaries.on_summary("dev-1", good)
    summaries.on_summary("dev-1", _summary(path, aid, 9))
    assert link.results()[len(cases) :] == ["taken", "replayed", "replayed"]
    # dev-2 was never offered the model: its own summary of it is refused too
    summaries.on_summary("dev-2", other)
    assert link.results()[-1] == "not_offered"


def test_a_device_sending_faster_than_its_bucket_is_refused_before_parsing(
    fleet: tuple[LocalStore, Registry, StoredArtifact, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _, registry, artifact, path = fleet
    link = FakeLink()
    summaries = Summaries(link, registry, RateLimiter(2, 1.0))
    with caplog.at_level("WARNING"):
        for seq in (1, 2, 3, 4, 5, 6):
            summaries.on_summary("dev-1", _summary(path, artifact.artifact_id, seq))
    assert link.results() == ["taken", "taken", *["rate_limited"] * 4]  # each one counted
    said = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(said) == 1 and "(rate_limited)" in said[0]  # a flood is not a flood of log lines
    kept = registry.statistics.latest("dev-1", artifact.artifact_id)
    assert kept is not None and kept.sequence == 2
