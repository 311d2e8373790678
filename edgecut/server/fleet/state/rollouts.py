"""Staged rollouts as rows: what jobs/rollout.py decided and why (it judges, this keeps)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from edgecut.server.fleet.state.database import Database, row_dict
from edgecut.server.fleet.state.schema import RolloutRow


class Rollouts:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, row: dict[str, Any]) -> None:
        with self.db.transaction() as s:
            s.add(RolloutRow(**row))

    def decide(self, rollout_id: str, state: str, reason: str, decided: float) -> None:
        with self.db.transaction() as s:
            db = s.get(RolloutRow, rollout_id)
            if db is not None:
                db.state, db.reason, db.decided = state, reason, decided

    def all(self, states: tuple[str, ...] | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""
        with self.db.transaction() as s:
            q = select(RolloutRow).order_by(RolloutRow.created.desc()).limit(limit)
            if states is not None:
                q = q.where(RolloutRow.state.in_(states))
            return [row_dict(r) for r in s.scalars(q)]
