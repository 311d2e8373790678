"""The fleet's signing key and the signed Manifest of every model offer (docs/security.md).

The key is a PEM file: `signing_key` in the server settings, else `<state_dir>/fleet-signing.key`,
generated on first start (mode 0600). Its public half is written beside it as `fleet-signing.pub`
(`ed25519:...`, the line devices are provisioned with). Only the key id is ever logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edgecut import signing
from edgecut.envelopes import now_ms, sign_manifest
from edgecut.server.fleet.jobs.outcomes import Ready
from edgecut.server.fleet.state.store import StoredArtifact
from edgecut.v1 import fleet_pb2 as pb

if TYPE_CHECKING:
    from google.protobuf.internal.containers import MessageMap

logger = logging.getLogger(__name__)

KEY_FILE = "fleet-signing.key"
PUB_FILE = "fleet-signing.pub"


def open_key(
    key_path: Path | None, state_dir: Path, key_file: str, pub_file: str, what: str
) -> signing.SigningKey:
    """The key at `key_path` (else `state_dir/key_file`), generated on first use, its public line beside it."""
    path = key_path or state_dir / key_file
    key, made = signing.load_or_generate(path)
    pub = path.with_name(pub_file) if path.name == key_file else path.with_suffix(".pub")
    try:
        if not pub.exists() or pub.read_text().strip() != key.public_text:
            pub.write_text(key.public_text + "\n")
    except OSError as exc:  # a read-only key directory: the key still works, the .pub is a convenience
        logger.warning("cannot write the public key beside %s: %s", path, exc.strerror)
    logger.info("%s %s %s (public key in %s)", what, key.key_id, "generated" if made else "loaded", pub)
    return key


class FleetSigner:
    def __init__(self, key: signing.SigningKey) -> None:
        self.key = key

    @classmethod
    def open(cls, key_path: Path | None, state_dir: Path) -> FleetSigner:
        return cls(open_key(key_path, state_dir, KEY_FILE, PUB_FILE, "fleet signing key"))

    @property
    def key_id(self) -> str:
        return self.key.key_id

    def offer(
        self,
        ready: Ready,
        grpc_address: str,
        device_id: str,
        needs_seq: int,
        offer_seq: int,
        variants: Sequence[StoredArtifact] = (),
        statistics: StoredArtifact | None = None,
    ) -> tuple[pb.ModelReady, pb.Manifest]:
        """The ModelReady for `device_id`, with its manifest signed; also returns the manifest.

        `offer_seq`: the device's next offer counter from the registry (`registry.offers.next_seq`).
        `variants`: the model's other precisions to list (link/variants.py chose them for the device);
        each is signed with the manifest, its sha256 and its quality against the fp32 model included.
        `statistics`: the model's statistics companion (issue 31), signed in `Manifest.statistics`.
        """
        a = ready.artifact
        manifest = pb.Manifest(
            artifact_id=a.artifact_id,
            sha256=a.sha256,
            size_bytes=a.size,
            build_key=ready.build_key,
            tasks=list(a.meta.tasks),
            base_model=a.meta.base_model,
            pipeline_version=a.meta.pipeline_version,
            params=max(0, a.meta.params),
            macs=max(0, a.meta.macs),
            parent_artifact_id=ready.parent_artifact_id,
            refinement=ready.refinement,
            device_id=device_id,
            needs_seq=needs_seq,
            issued_unix_ms=now_ms(),
            grpc_address=grpc_address,
            offer_seq=offer_seq,
            adapted_from_sequence=ready.adapted_from_sequence,
        )
        _put_metrics(manifest.metrics, a.meta.metrics)
        for v in variants:
            manifest.variants.append(model_variant(a, v))
        if statistics is not None:
            manifest.statistics.CopyFrom(model_variant(a, statistics))
        data, signature = sign_manifest(self.key, manifest)
        msg = plain_offer(ready, grpc_address, device_id, needs_seq)
        msg.manifest = data
        msg.signature.CopyFrom(signature)
        return msg, manifest


def _put_metrics(dst: MessageMap[str, pb.TaskMetrics], metrics: dict[str, dict[str, float]]) -> None:
    """`metrics` (task -> name -> value) into a protobuf map of TaskMetrics (a manifest's or a variant's)."""
    for task, values in metrics.items():
        dst[task].values.update({k: float(v) for k, v in values.items()})


def model_variant(model: StoredArtifact, variant: StoredArtifact) -> pb.ModelVariant:
    """The manifest's entry for `variant` of `model`; its task_changes are against the fp32 model.

    Both metas carry each task's change against the full model (%, ModelMeta.task_changes); their
    difference is what the precision costs. A task either lacks is left out: the agent then does not
    take the variant's quality as vouched for, and serves the fp32 model.
    """
    m = variant.meta
    out = pb.ModelVariant(
        artifact_id=variant.artifact_id,
        sha256=variant.sha256,
        size_bytes=variant.size,
        precision=m.precision,
        macs=max(0, m.macs),
    )
    _put_metrics(out.metrics, m.metrics)
    fp32 = model.meta.task_changes
    for task, change in m.task_changes.items():
        if task in fp32:
            out.task_changes[task] = round(float(change) - float(fp32[task]), 4)
    return out


def plain_offer(ready: Ready, grpc_address: str, device_id: str = "", needs_seq: int = 0) -> pb.ModelReady:
    """The ModelReady's plain fields alone: unsigned, so no agent acts on it (the gRPC answer to a
    caller whose device id nothing proves, grpc_api.py)."""
    a = ready.artifact
    return pb.ModelReady(
        device_id=device_id,
        artifact_id=a.artifact_id,
        sha256=a.sha256,
        size_bytes=a.size,
        build_key=ready.build_key,
        tasks=list(a.meta.tasks),
        grpc_address=grpc_address,
        needs_seq=needs_seq,
        params=max(0, a.meta.params),
        macs=max(0, a.meta.macs),
        cache_hit=ready.cache_hit,
        parent_artifact_id=ready.parent_artifact_id,
        refinement=ready.refinement,
    )
