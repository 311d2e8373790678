"""Offers signed for devices (and the counter that orders them) and the swaps devices report back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from edgecut.server.fleet.state.database import Database, row_dict
from edgecut.server.fleet.state.devices import Devices
from edgecut.server.fleet.state.schema import DeviceRow, OfferRow, OfferVariantRow, SwapRow, now


class Offers:
    def __init__(self, db: Database, devices: Devices) -> None:
        self.db, self.devices = db, devices

    def next_seq(self, device_id: str, now_ms: int) -> int:
        """The counter for the next offer signed for the device: max(its last + 1, `now_ms`).

        One UPDATE ... RETURNING: on PostgreSQL it holds the device's row lock, so replicas signing for
        the same device at once get distinct, increasing numbers; the clock floor keeps the counter
        above every earlier one even if the registry was restored from an old backup.
        """
        with self.db.transaction() as s:
            self.devices.touch(s, device_id)
            bumped = DeviceRow.offer_seq + 1
            q = (
                update(DeviceRow)
                .where(DeviceRow.device_id == device_id)
                .values(offer_seq=case((bumped > now_ms, bumped), else_=now_ms))
                .returning(DeviceRow.offer_seq)
            )
            return int(s.execute(q).scalar_one())

    def record(
        self,
        device_id: str,
        build_key: str,
        artifact_id: str,
        needs_seq: int = 0,
        manifest: dict[str, Any] | None = None,
        variant_ids: Sequence[str] = (),
    ) -> None:
        """One signed offer; `variant_ids`: the other precisions its manifest lists (downloadable too)."""
        with self.db.transaction() as s:
            row = self.devices.touch(s, device_id)
            row.build_key, row.offered_artifact_id = build_key, artifact_id
            s.add(
                OfferRow(
                    device_id=device_id,
                    artifact_id=artifact_id,
                    needs_seq=needs_seq,
                    manifest=manifest or {},
                    at=now(),
                )
            )
            for vid in variant_ids:
                s.add(OfferVariantRow(device_id=device_id, artifact_id=artifact_id, variant_id=vid, at=now()))

    def was_offered(self, device_id: str, artifact_id: str) -> bool:
        """Whether a signed offer to the device named `artifact_id`, as its model or one of its variants."""
        with self.db.transaction() as s:
            q = select(OfferRow.id).where(
                OfferRow.device_id == device_id, OfferRow.artifact_id == artifact_id
            )
            if s.scalars(q.limit(1)).first() is not None:
                return True
            v = select(OfferVariantRow.id).where(
                OfferVariantRow.device_id == device_id, OfferVariantRow.variant_id == artifact_id
            )
            return s.scalars(v.limit(1)).first() is not None

    def offered_model(self, device_id: str, artifact_id: str) -> bool:
        """Whether a signed offer to the device named `artifact_id` as its model (not as a variant)."""
        with self.db.transaction() as s:
            q = select(OfferRow.id).where(
                OfferRow.device_id == device_id, OfferRow.artifact_id == artifact_id
            )
            return s.scalars(q.limit(1)).first() is not None

    def devices_offered(self, artifact_id: str) -> list[tuple[str, int]]:
        """(device id, needs seq) of the devices whose latest offer is `artifact_id`."""
        with self.db.transaction() as s:
            q = select(DeviceRow).where(DeviceRow.offered_artifact_id == artifact_id)
            return [(r.device_id, r.needs_seq) for r in s.scalars(q)]

    def wanted(self, build_key: str, tasks: list[str], budget: str, artifact_id: str) -> bool:
        """Whether a device may still want what `build_key` builds (`artifact_id` being its latest model).

        Yes when that artifact was never offered to a device (asked over gRPC, by a bench: there is no
        device to watch), when a device's latest offer was of that key, or when a device's current needs
        are those tasks at that budget (asked, not answered yet). No when every device it went to has
        moved on to other tasks or budgets.
        """
        with self.db.transaction() as s:
            if (
                s.scalars(select(OfferRow.id).where(OfferRow.artifact_id == artifact_id).limit(1)).first()
                is None
            ):
                return True
            if s.scalars(
                select(DeviceRow.device_id).where(DeviceRow.build_key == build_key).limit(1)
            ).first():
                return True
            rows = s.scalars(select(DeviceRow.needs_tasks).where(DeviceRow.budget == budget))
            return any(set(needs or ()) == set(tasks) for needs in rows)

    def devices_on(self, artifact_id: str) -> list[tuple[str, int]]:
        """(device id, needs seq) of the devices whose latest offer is `artifact_id` *and* answered
        their current needs (a device that asked for something else since waits for that answer)."""
        with self.db.transaction() as s:
            out = []
            for row in s.scalars(select(DeviceRow).where(DeviceRow.offered_artifact_id == artifact_id)):
                q = select(OfferRow.needs_seq).where(OfferRow.device_id == row.device_id)
                last = s.scalars(q.order_by(OfferRow.id.desc()).limit(1)).first()
                if last is not None and last == row.needs_seq:
                    out.append((row.device_id, row.needs_seq))
            return out

    def record_swap(
        self,
        device_id: str,
        artifact_id: str,
        ok: bool,
        reason: str,
        previous: str,
        load_ms: float,
        verified_key_id: str = "",
        precision: str = "",
        timings: Sequence[dict[str, Any]] = (),
    ) -> None:
        """A device's swap report; an ok one with a verified key makes its signed offer the provenance."""
        with self.db.transaction() as s:
            row = self.devices.touch(s, device_id)
            if ok:
                row.artifact_id = artifact_id
                manifest = _manifest(s, device_id, artifact_id)
                row.provenance = (
                    {"verified_key_id": verified_key_id, "manifest": manifest} if verified_key_id else {}
                )
            s.add(
                SwapRow(
                    device_id=device_id,
                    artifact_id=artifact_id,
                    ok=ok,
                    reason=reason,
                    previous_artifact_id=previous,
                    load_ms=load_ms,
                    at=now(),
                    precision=precision,
                    timings=list(timings),
                )
            )

    def swaps(self, device_id: str, limit: int = 50) -> list[dict[str, Any]]:
        with self.db.transaction() as s:
            q = select(SwapRow).where(SwapRow.device_id == device_id).order_by(SwapRow.id.desc()).limit(limit)
            return [row_dict(r) for r in s.scalars(q)]


def _manifest(s: Session, device_id: str, artifact_id: str) -> dict[str, Any]:
    """The manifest of the latest offer of `artifact_id` signed for the device ({} when none)."""
    q = (
        select(OfferRow)
        .where(OfferRow.device_id == device_id, OfferRow.artifact_id == artifact_id)
        .order_by(OfferRow.id.desc())
        .limit(1)
    )
    offer = s.scalars(q).first()
    return dict(offer.manifest) if offer is not None else {}
