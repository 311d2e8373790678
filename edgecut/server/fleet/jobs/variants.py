"""A build's other precisions (issue 30): stored beside its fp32 model and recorded against it.

The engine returns them in `BuiltArtifact.variants`; each is stored content-addressed like the model
itself (same store backend) and recorded in the registry under the fp32 model's id, so every offer
of that model (a fresh build, a cache hit, a rollout's promotion or rollback) lists the same variants,
and a refinement, being another fp32 model, carries its own. The statistics companion (issue 31) is
stored the same way and recorded with the layers a device's summary of that model must hold.
"""

from __future__ import annotations

import logging

from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.store import Store, StoredArtifact
from edgecut.server.spec import BuiltArtifact

logger = logging.getLogger(__name__)


def store_variants(store: Store, registry: Registry, artifact: StoredArtifact, built: BuiltArtifact) -> int:
    """Store and record `built`'s variants of `artifact` (its stored fp32 model); returns how many."""
    kept: list[tuple[str, str]] = []
    for v in built.variants:
        meta = v.meta
        if meta.precision == "fp32" or sorted(meta.tasks) != sorted(artifact.meta.tasks):
            logger.warning(
                "not storing a %s variant of %s for tasks %s: a variant is another precision of the "
                "same model",
                meta.precision,
                artifact.artifact_id[:12],
                meta.tasks,
            )
            continue
        meta = meta.model_copy(update={"build_key": artifact.meta.build_key})
        stored = store.put_file(v.onnx_path, meta)
        kept.append((stored.artifact_id, meta.precision))
        logger.info(
            "%s variant of %s stored: %s (%d bytes)",
            meta.precision,
            artifact.artifact_id[:12],
            stored.artifact_id[:12],
            stored.size,
        )
    if kept:
        registry.variants.record(artifact.artifact_id, kept)
    store_statistics(store, registry, artifact, built)
    return len(kept)


def store_statistics(
    store: Store, registry: Registry, artifact: StoredArtifact, built: BuiltArtifact
) -> None:
    """Store `built`'s statistics companion and record it against `artifact` (none: nothing to do)."""
    stats = built.statistics
    if stats is None:
        return
    if stats.meta.precision != "stats" or not stats.meta.norm_layers:
        logger.warning(
            "not storing the statistics companion of %s: it names no normalisation layers",
            artifact.artifact_id[:12],
        )
        return
    meta = stats.meta.model_copy(update={"build_key": artifact.meta.build_key})
    stored = store.put_file(stats.onnx_path, meta)
    registry.statistics.record_companion(artifact.artifact_id, stored.artifact_id, meta.norm_layers)
    logger.info(
        "statistics companion of %s stored: %s (%d bytes, %d layers)",
        artifact.artifact_id[:12],
        stored.artifact_id[:12],
        stored.size,
        len(meta.norm_layers),
    )
