"""Which other precisions (variants) a stored fp32 model has: each its own content-addressed file."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from edgecut.server.fleet.state.database import Database
from edgecut.server.fleet.state.schema import ArtifactVariantRow


class Variants:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, artifact_id: str, variants: Iterable[tuple[str, str]]) -> None:
        """`variants`: (variant id, precision) of the fp32 model `artifact_id` (idempotent)."""
        with self.db.transaction() as s:
            for variant_id, precision in variants:
                if s.get(ArtifactVariantRow, (artifact_id, variant_id)) is None:
                    s.add(
                        ArtifactVariantRow(
                            artifact_id=artifact_id, variant_id=variant_id, precision=precision
                        )
                    )

    def of(self, artifact_id: str) -> list[tuple[str, str]]:
        """(variant id, precision) of `artifact_id`, in precision order."""
        with self.db.transaction() as s:
            q = select(ArtifactVariantRow).where(ArtifactVariantRow.artifact_id == artifact_id)
            return sorted((r.variant_id, r.precision) for r in s.scalars(q))
