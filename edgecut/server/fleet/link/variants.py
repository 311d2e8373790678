"""Which of a model's variants an offer lists for a device (issue 30: the device decides by its clock).

Every int8 variant is offered: the device times it beside the fp32 model and serves the faster one.
An fp16 variant is offered only to a device whose onnxruntime has a provider that runs fp16 (CUDA or
TensorRT): on a CPU it is slower than fp32, so downloading it would only cost the device time and disk.
The statistics companion (issue 31) is offered to every device: only one whose owner turned adaptation
on downloads it (the agent's choice), and only a device it was offered to may.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from edgecut.errors import EdgecutError
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.store import Store, StoredArtifact

logger = logging.getLogger(__name__)

FP16_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})


def runs_on(precision: str, providers: Iterable[str]) -> bool:
    """Whether a device with these onnxruntime providers should be offered `precision`."""
    return precision != "fp16" or bool(FP16_PROVIDERS & set(providers))


def variants_for(
    store: Store, registry: Registry, artifact: StoredArtifact, device_id: str
) -> list[StoredArtifact]:
    """The variants of `artifact` to sign into an offer for `device_id` (its providers from its needs)."""
    dev = registry.devices.get(device_id) or {}
    providers = list((dev.get("resources") or {}).get("ort_providers") or ())
    out: list[StoredArtifact] = []
    for vid, precision in registry.variants.of(artifact.artifact_id):
        if not runs_on(precision, providers):
            continue
        try:
            if not store.verify(vid):  # corrupt: quarantined, offered no more (the fp32 model still is)
                continue
            out.append(store.get(vid))
        except EdgecutError as exc:
            logger.warning(
                "%s variant %s of %s is not offered: %s", precision, vid[:12], artifact.artifact_id[:12], exc
            )
    return out


def statistics_for(store: Store, registry: Registry, artifact: StoredArtifact) -> StoredArtifact | None:
    """The statistics companion of `artifact` to sign into its offers; None when it has none (or it rotted)."""
    companion = registry.statistics.companion(artifact.artifact_id)
    if companion is None:
        return None
    try:
        return store.get(companion.statistics_id) if store.verify(companion.statistics_id) else None
    except EdgecutError as exc:
        logger.warning(
            "statistics companion %s of %s is not offered: %s",
            companion.statistics_id[:12],
            artifact.artifact_id[:12],
            exc,
        )
        return None
