"""Which device waits for which build: remembered in the database so the answer can still be published
after a restart, by whichever replica finishes the build."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select

from edgecut.server.fleet.state.database import Database
from edgecut.server.fleet.state.schema import WaiterRow


@dataclass(frozen=True)
class Waiter:
    device_id: str
    needs_seq: int


class Waiters:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, build_key: str, device_id: str, needs_seq: int) -> None:
        with self.db.transaction() as s:
            ins = self.db.insert(WaiterRow).values(
                build_key=build_key, device_id=device_id, needs_seq=needs_seq
            )
            s.execute(
                ins.on_conflict_do_update(
                    index_elements=["build_key", "device_id"], set_={"needs_seq": needs_seq}
                )
            )

    def waiting(self) -> dict[str, str]:
        """device id -> the build key it waits for (devices not yet answered)."""
        with self.db.transaction() as s:
            return {d: k for d, k in s.execute(select(WaiterRow.device_id, WaiterRow.build_key))}

    def take(self, build_key: str) -> list[Waiter]:
        """Remove and return the devices waiting for `build_key` (each is answered once).

        One DELETE ... RETURNING: when two replicas take the same key's waiters at once, each row goes
        to one of them.
        """
        with self.db.transaction() as s:
            rows = s.execute(
                delete(WaiterRow)
                .where(WaiterRow.build_key == build_key)
                .returning(WaiterRow.device_id, WaiterRow.needs_seq)
            ).all()
            return [Waiter(device_id, needs_seq) for device_id, needs_seq in rows]
