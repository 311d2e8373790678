"""A build's precision variants in the fleet (issue 30): stored and recorded against their fp32 model,
signed into the offer with their quality against it, fp16 only for devices that run it, downloadable
only by a device whose offer listed them; and an agent that predates the field still reads the offer."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from edgecut.envelopes import open_offer
from edgecut.server.fleet.jobs.outcomes import Ready
from edgecut.server.fleet.jobs.variants import store_variants
from edgecut.server.fleet.link.signer import FleetSigner
from edgecut.server.fleet.link.variants import variants_for
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.store import LocalStore, StoredArtifact
from edgecut.server.spec import Budget, BuildSpec
from edgecut.signing import Keyring, SignatureError
from edgecut.v1 import fleet_pb2 as pb
from tests.support.keys import fleet_key
from tests.support.variant_engine import VariantEngine

CPU = ["CPUExecutionProvider"]
CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture
def built(tmp_path: Path) -> tuple[LocalStore, Registry, StoredArtifact]:
    """A seg+depth build with int8 (0.3 points worse than fp32) and fp16 variants, stored as the
    build workers store it, and two devices' needs: one on a CPU, one with CUDA."""
    store, registry = LocalStore(tmp_path / "store"), Registry(f"sqlite:///{tmp_path / 'reg.sqlite3'}")
    engine = VariantEngine(tmp_path / "engine", int8="faster", int8_change=-0.3, fp16=True)
    b = engine.build(BuildSpec(("seg", "depth"), Budget(macs_fraction=0.5)), lambda *a: None)
    artifact = store.put_file(b.onnx_path, b.meta)
    assert store_variants(store, registry, artifact, b) == 2
    for device, providers in (("cpu-dev", CPU), ("cuda-dev", CUDA)):
        registry.devices.record_needs(
            device, ["seg", "depth"], 1, {}, {"ort_providers": providers}, "x86", "b"
        )
    return store, registry, artifact


def test_variants_are_signed_into_the_offer_with_their_change_against_fp32(
    built: tuple[LocalStore, Registry, StoredArtifact],
) -> None:
    store, registry, artifact = built
    variants = variants_for(store, registry, artifact, "cuda-dev")
    assert sorted(v.meta.precision for v in variants) == ["fp16", "int8"]
    msg, _ = FleetSigner(fleet_key()).offer(
        Ready(artifact.meta.build_key, artifact), "127.0.0.1:1", "cuda-dev", 1, 7, variants
    )
    keyring = Keyring.from_config([fleet_key().public_text], [], "fleet_keys")
    opened = open_offer(keyring, msg)
    assert opened.artifact_id == artifact.artifact_id  # the manifest's own model stays the fp32 one
    by_precision = {v.precision: v for v in opened.variants}
    int8 = by_precision["int8"]
    assert int8.sha256 == int8.artifact_id and store.size(int8.artifact_id) == int8.size_bytes
    assert dict(int8.task_changes) == pytest.approx({"seg": -0.3, "depth": -0.3})
    assert set(int8.metrics) == {"seg", "depth"} and int8.macs == artifact.meta.macs
    # the signature covers the variants: another variant's id or sha swapped in is refused
    forged = pb.Manifest.FromString(msg.manifest)
    forged.variants[0].sha256 = "0" * 64
    msg.manifest = forged.SerializeToString()
    with pytest.raises(SignatureError):
        open_offer(keyring, msg)


def test_fp16_is_offered_only_to_devices_whose_providers_run_it(
    built: tuple[LocalStore, Registry, StoredArtifact],
) -> None:
    store, registry, artifact = built
    assert [v.meta.precision for v in variants_for(store, registry, artifact, "cpu-dev")] == ["int8"]
    assert [v.meta.precision for v in variants_for(store, registry, artifact, "unknown-dev")] == ["int8"]
    assert len(variants_for(store, registry, artifact, "cuda-dev")) == 2


def test_a_corrupt_variant_is_not_offered_and_the_model_still_is(
    built: tuple[LocalStore, Registry, StoredArtifact],
) -> None:
    store, registry, artifact = built
    [int8] = variants_for(store, registry, artifact, "cpu-dev")
    path = store.root / int8.artifact_id[:2] / f"{int8.artifact_id}.onnx"
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    assert store.verify(int8.artifact_id, force=True) is False  # quarantined
    assert variants_for(store, registry, artifact, "cpu-dev") == []
    assert store.verify(artifact.artifact_id)


def test_a_variant_is_downloadable_only_by_devices_whose_offer_listed_it(
    built: tuple[LocalStore, Registry, StoredArtifact],
) -> None:
    _, registry, artifact = built
    vid = next(v for v, precision in registry.variants.of(artifact.artifact_id) if precision == "int8")
    registry.offers.record("cpu-dev", artifact.meta.build_key, artifact.artifact_id, 1, {}, [vid])
    assert registry.offers.was_offered("cpu-dev", vid) and registry.offers.was_offered(
        "cpu-dev", artifact.artifact_id
    )
    assert not registry.offers.was_offered("cuda-dev", vid)


def test_an_agent_that_predates_variants_reads_the_offer_it_always_read(
    built: tuple[LocalStore, Registry, StoredArtifact],
) -> None:
    """The manifest parsed with the schema before `variants` existed (field 19 dropped): the fields an
    older agent acts on are intact and the signed bytes are unchanged (it verifies exactly those)."""
    store, registry, artifact = built
    msg, manifest = FleetSigner(fleet_key()).offer(
        Ready(artifact.meta.build_key, artifact),
        "127.0.0.1:1",
        "cpu-dev",
        1,
        7,
        variants_for(store, registry, artifact, "cpu-dev"),
    )
    old_file = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(old_file)
    old_file.name, old_file.package = "old/fleet.proto", "old.edgecut.v1"
    del old_file.service[:]
    for message in [*old_file.message_type, *(n for t in old_file.message_type for n in t.nested_type)]:
        for f in message.field:  # type names point into the renamed package
            if f.type_name:
                f.type_name = f.type_name.replace(".edgecut.v1.", ".old.edgecut.v1.")
    old_manifest = next(m for m in old_file.message_type if m.name == "Manifest")
    kept = [f for f in old_manifest.field if f.name != "variants"]
    del old_manifest.field[:]
    old_manifest.field.extend(kept)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(old_file)
    OldManifest = message_factory.GetMessageClass(pool.FindMessageTypeByName("old.edgecut.v1.Manifest"))
    old = OldManifest.FromString(msg.manifest)
    assert len(manifest.variants) == 1 and not hasattr(old, "variants")
    assert (old.artifact_id, old.sha256, old.size_bytes) == (
        artifact.artifact_id,
        artifact.sha256,
        artifact.size,
    )
    assert (old.device_id, old.needs_seq, old.offer_seq) == ("cpu-dev", 1, 7)
