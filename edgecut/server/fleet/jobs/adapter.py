"""The adaptation job (issue 31): a device's summary in, a model adapted to its statistics bucket out.

When the bridge takes a summary (link/summaries.py), `on_summary` works out which model it is about
(the device's model of build key K, or the adapted model it runs, whose base is that model), its
statistics bucket (policy/stat_buckets.py) and whether anything is to be done:

- the device's latest adaptation is of the same base and it has not moved out of its bucket: nothing
  (a summary that stays in its bucket costs no build);
- an adaptation was chosen for it less than `adapt_min_interval_s` ago: nothing (the rate limit; its
  next summary past the interval is judged again);
- else its choice is recorded (state/adaptations.py) and the job `adaptation_key(K, base, bucket)` is
  asked for: already done, its adapted model is offered at once (a second device in the same bucket
  gets the first one's model without a build); queued or running, the device waits for it; failed or
  not shipped, nothing (the device keeps its model); missing, it is queued as a job of kind `adapt`.

The job runs like a refinement: claimed under a lease by this module's worker (single flight per key,
also across replicas; resumed after a restart), it calls `engine.adapt` (cut/adapt.py, the method the
settings name) with the summary of the device that asked first, and the engine ships the result only
when the summary shows a shift and the result loses at most `max_loss` points of Δm on the validation
set as the device's camera shows it (engine.adapt). Its outcome is the job's stage:
`adapted` (an artifact, offered to every device waiting for the key, Manifest.adapted_from_sequence
set to each device's own summary sequence), `not shipped`, or `failed` with its message.

A new model of K (a refinement) reaches an adapted device adapted again: `on_refined` asks for the
new model adapted to each such device's bucket, from its stored summary, and delivery (`instead`)
holds the plain model back from it meanwhile.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgecut import norm_stats
from edgecut.errors import EdgecutError
from edgecut.server.fleet.events import FleetEvent, Observers
from edgecut.server.fleet.jobs.leases import Leases, next_job
from edgecut.server.fleet.jobs.outcomes import Interrupted, Ready
from edgecut.server.fleet.jobs.variants import store_variants
from edgecut.server.fleet.policy import stat_buckets
from edgecut.server.fleet.state.adaptations import Adapted
from edgecut.server.fleet.state.job_record import JobRecord, adaptation_key
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.schema import ADAPT, DONE, FAILED, QUEUED, RUNNING
from edgecut.server.fleet.state.store import Store
from edgecut.server.spec import AdaptRequest, Engine, Refinement, spec_from_dict
from edgecut.v1 import fleet_pb2 as pb

logger = logging.getLogger(__name__)

ADAPTED, NOT_SHIPPED = "adapted", "not shipped"
# offer(device_id, ready): deliver an adapted model to a device (the bridge's Delivery.offer)
OfferFn = Callable[[str, Ready], None]


@dataclass(frozen=True)
class AdaptPolicy:
    """What the settings say: the method (None: cut/adapt.py's default), the Δm an adaptation may lose
    on the validation set, and the least seconds between two adaptations chosen for one device."""

    method: str | None = None
    max_loss: float = 0.5
    min_interval_s: float = 600.0


class Adapter:
    """The adapt worker and the decisions around it: a peer of the refiner, sharing its leases."""

    def __init__(
        self,
        engine: Engine,
        store: Store,
        registry: Registry,
        leases: Leases,
        observers: Observers,
        busy: Callable[[], bool],
        policy: AdaptPolicy = AdaptPolicy(),
    ) -> None:
        self.engine, self.store, self.registry, self.leases = engine, store, registry, leases
        self.observers, self.busy, self.policy = observers, busy, policy
        self.offer: OfferFn | None = None  # set by the MQTT bridge
        self.wake = threading.Event()

    # -- decisions -------------------------------------------------------------------------------

    def on_summary(self, device_id: str, msg: pb.StatsSummary) -> None:
        """A summary was taken from `device_id`: adapt its model to its bucket when that is due."""
        try:
            self._on_summary(device_id, msg)
        except Exception:  # the summary is stored; its device's next one is judged again
            logger.exception("adaptation for %s's summary %d failed", device_id, msg.sequence)

    def _on_summary(self, device_id: str, msg: pb.StatsSummary) -> None:
        point = stat_buckets.point(msg)
        label = stat_buckets.bucket(point)
        base = self._base_of(msg.artifact_id)
        build_key = self.store.meta(base).build_key
        row = self.registry.adaptations.get(device_id)
        if row is not None and row.base_artifact_id == base and not stat_buckets.moved(row.point, point):
            self._observe(device_id, "in bucket", bucket=row.bucket, sequence=msg.sequence)
            logger.info(
                "summary %d of %s stays in bucket %s: no adaptation", msg.sequence, device_id, row.bucket
            )
            return
        key = adaptation_key(build_key, base, stat_buckets.bucket_id(label))
        interval = self.policy.min_interval_s if row is not None else 0.0
        if not self.registry.adaptations.choose(
            device_id, build_key, base, label, msg.sequence, point, key, interval
        ):
            self._observe(device_id, "rate limited", bucket=label, sequence=msg.sequence)
            logger.info(
                "summary %d of %s moved to bucket %s; adapted less than %g s ago: not yet",
                msg.sequence,
                device_id,
                label,
                self.policy.min_interval_s,
            )
            return
        self._ask(key, build_key, base, label, device_id, msg)

    def _base_of(self, artifact_id: str) -> str:
        """The model an artifact adapts (itself when it is not an adapted model)."""
        for rec in self.registry.jobs.with_artifact(artifact_id):
            if rec.kind == ADAPT:
                return str(rec.spec["adapt"]["parent"])
        return artifact_id

    def _ask(
        self, key: str, build_key: str, base: str, label: str, device_id: str, msg: pb.StatsSummary
    ) -> None:
        """Answer the device from the key's job, or queue that job (single flight: one row per key)."""
        of = self.registry.jobs.get(build_key)
        if of is None:
            raise EdgecutError(f"no build of {build_key} is recorded: its spec is unknown")
        doc: dict[str, Any] = {
            **{k: v for k, v in of.spec.items() if k not in ("refine", "adapt")},
            "adapt": {
                "of": build_key,
                "parent": base,
                "bucket": label,
                "device": device_id,
                "sequence": msg.sequence,
                "summary": base64.b64encode(msg.SerializeToString()).decode(),
                "method": self.policy.method,
                "max_loss": self.policy.max_loss,
            },
        }
        rec = self.registry.jobs.ensure(key, doc, kind=ADAPT)
        if rec.state == DONE:
            if rec.artifact_id and self.store.exists(rec.artifact_id):
                logger.info("%s gets adapted model %s (bucket %s) without a build", device_id, key, label)
                self._observe(device_id, "cached", bucket=label, artifact_id=rec.artifact_id, job=key)
                self._deliver(
                    key, rec.artifact_id, [d for d in self._waiting(key) if d.device_id == device_id]
                )
            else:
                self._observe(device_id, rec.stage, bucket=label, job=key)
            return
        if rec.state in (QUEUED, RUNNING):
            logger.info("%s waits for adaptation %s (bucket %s)", device_id, key, label)
            self._observe(device_id, "queued", bucket=label, job=key)
            asked = rec.spec.get("adapt", {})
            if (asked.get("device"), asked.get("sequence")) == (device_id, msg.sequence):  # queued by us
                self._job(key, "queued", 0.0, {**asked, "tasks": list(rec.spec.get("tasks", []))})
            self.wake.set()

    def instead(self, device_id: str, ready: Ready) -> Ready | None:
        """What to offer `device_id` in place of `ready` (a plain model of its key): the adapted model
        of that very model when it has one, None (nothing now: its adaptation is asked for) when the
        device runs an adapted model of an older one, else `ready` itself."""
        row = self.registry.adaptations.get(device_id)
        if row is None or not row.artifact_id or row.build_key != ready.build_key:
            return ready
        if row.base_artifact_id == ready.artifact.artifact_id:
            if not self.store.exists(row.artifact_id):
                return ready
            return self._adapted_ready(row.build_key, row.artifact_id, row, ready.refinement)
        self.readapt(ready, [row])
        return None

    def on_refined(self, ready: Ready) -> None:
        """A new model of a key: each device adapted from an older one gets it adapted to its bucket."""
        if ready.held or ready.adapted_from_sequence:
            return
        rows = [r for r in self.registry.adaptations.of_key(ready.build_key) if r.artifact_id]
        self.readapt(ready, [r for r in rows if r.base_artifact_id != ready.artifact.artifact_id])

    def readapt(self, ready: Ready, rows: list[Adapted]) -> None:
        """Ask for `ready`'s model adapted to each row's bucket, from the device's stored summary (a
        change of the server's model, not of the device: not rate limited)."""
        base = ready.artifact.artifact_id
        for row in rows:
            if row.job_key.endswith(base[:12]):
                continue  # already asked for
            summary = self._stored_summary(row)
            if summary is None:
                logger.warning("no stored summary of %s: its adapted model stays", row.device_id)
                continue
            key = adaptation_key(row.build_key, base, stat_buckets.bucket_id(row.bucket))
            self.registry.adaptations.choose(
                row.device_id, row.build_key, base, row.bucket, row.sequence, row.point, key
            )
            logger.info("new model %s of %s: adapting it for %s", base[:12], row.build_key, row.device_id)
            self._ask(key, row.build_key, base, row.bucket, row.device_id, summary)

    def _stored_summary(self, row: Adapted) -> pb.StatsSummary | None:
        for kept in self.registry.statistics.of_device(row.device_id):
            if kept.sequence == row.sequence:
                msg = pb.StatsSummary()
                msg.ParseFromString(kept.summary)
                return msg
        return None

    def _waiting(self, key: str) -> list[Adapted]:
        return self.registry.adaptations.waiting(key)

    def _adapted_ready(self, build_key: str, artifact_id: str, row: Adapted, refinement: int) -> Ready:
        return Ready(
            build_key,
            self.store.get(artifact_id),
            parent_artifact_id=row.base_artifact_id,
            refinement=refinement,
            adapted_from_sequence=row.sequence,
        )

    def _deliver(self, key: str, artifact_id: str, rows: list[Adapted]) -> None:
        """Offer the adapted model to each device waiting for it, flagged with its own summary."""
        if self.offer is None:
            return
        for row in rows:
            ready = self._adapted_ready(
                row.build_key, artifact_id, row, self.store.meta(artifact_id).refinement
            )
            try:
                self.offer(row.device_id, ready)
                self.registry.adaptations.offered(row.device_id, artifact_id)
                self._catch_up(row)
            except Exception:
                logger.exception("offering adapted model %s to %s failed", artifact_id[:12], row.device_id)

    def _catch_up(self, row: Adapted) -> None:
        """The key moved on (a refinement landed) while the device's adaptation was built: adapt that too."""
        current = self.registry.jobs.get(row.build_key)
        if current is None or current.state != DONE or current.artifact_id in ("", row.base_artifact_id):
            return
        if self.store.exists(current.artifact_id):
            ready = Ready(row.build_key, self.store.get(current.artifact_id), refinement=current.refinement)
            self.readapt(ready, [row])

    # -- the adapt worker ----------------------------------------------------------------------

    def work(self) -> None:
        while not self.leases.stopping:
            rec = next_job(self.leases, self.registry.jobs, self.wake, ADAPT, "an adaptation", self.busy)
            if rec is None:
                continue
            if rec.state == FAILED:
                logger.error("adaptation %s failed: %s", rec.build_key, rec.error_message)
                self._job(rec.build_key, "failed", 1.0, {"error": rec.error_message})
                continue
            self.run(rec)

    def run(self, rec: JobRecord) -> None:
        leases, key, gen = self.leases, rec.build_key, rec.generation
        try:
            info = rec.spec["adapt"]
            spec = spec_from_dict(rec.spec)
            parent = str(info["parent"])
            summary = pb.StatsSummary()
            summary.ParseFromString(base64.b64decode(info["summary"]))
            layers = norm_stats.from_proto(summary)
            parent_meta = self.store.get(parent).meta
            self.engine.validate(spec)
        except Exception as exc:  # an older server's row, a summary of another model, a model gone
            logger.warning("dropping adaptation %s: %s", key, exc)
            self._finish(
                key, gen, FAILED, stage="failed", error_code="BUILD_FAILED", error_message=str(exc)[:500]
            )
            return
        leases.hold(key)
        self._job(key, "running", 0.0, {**info, "tasks": list(spec.tasks)})
        stages = {"running"}

        def progress(stage: str, fraction: float, detail: str = "") -> None:
            if leases.should_stop(key):
                raise Interrupted
            if stage not in stages:
                stages.add(stage)
                if not self.registry.jobs.update(key, gen, stage=stage, fraction=fraction):
                    leases.lose(key)
                    raise Interrupted
            self._job(key, stage, min(max(fraction, 0.0), 1.0), {"detail": detail})

        request = AdaptRequest(
            Refinement(parent, parent_meta, parent_meta.refinement),
            layers,
            info.get("method"),
            float(info.get("max_loss", self.policy.max_loss)),
        )
        try:
            built = self.engine.adapt(spec, request, progress)
            artifact, notes = None, ""
            if built is not None:
                try:
                    meta = built.meta.model_copy(update={"build_key": str(info["of"])})
                    artifact = self.store.put_file(built.onnx_path, meta)
                    store_variants(self.store, self.registry, artifact, built)
                    notes = "; ".join(built.notes)
                finally:
                    built.cleanup()
        except Interrupted:
            if not leases.let_go(key):
                self.registry.jobs.release(key, leases.owner)
            logger.info("adaptation %s interrupted; queued again", key)
            return
        except Exception as exc:
            logger.exception("adaptation %s failed", key)
            self._finish(
                key, gen, FAILED, stage="failed", error_code="BUILD_FAILED", error_message=str(exc)[:500]
            )
            return
        lineage = {"parent_artifact_id": parent, "refinement": parent_meta.refinement}
        if artifact is None:
            logger.info("adaptation %s loses too much on the validation set; nothing shipped", key)
            self._finish(key, gen, DONE, stage=NOT_SHIPPED, **lineage)
            return
        if not self._finish(key, gen, DONE, stage=ADAPTED, artifact_id=artifact.artifact_id, **lineage):
            return
        logger.info("adaptation %s ready: artifact %s; %s", key, artifact.artifact_id[:12], notes)
        self._deliver(key, artifact.artifact_id, self._waiting(key))

    def _finish(self, key: str, generation: int, state: str, **fields: Any) -> bool:
        recorded = self.registry.jobs.finish(key, self.leases.owner, generation, state=state, **fields)
        self.leases.let_go(key)
        if not recorded:
            logger.warning(
                "adaptation %s: this replica lost its lease before it finished; result dropped", key
            )
            return False
        self._job(key, str(fields.get("stage", state)), 1.0, {"artifact_id": fields.get("artifact_id", "")})
        return True

    def _job(self, key: str, stage: str, fraction: float, data: dict[str, Any]) -> None:
        data = {k: v for k, v in data.items() if k != "summary"}
        self.observers.emit(
            FleetEvent("adaptation", data={"build_key": key, "stage": stage, "fraction": fraction, **data})
        )

    def _observe(self, device_id: str, result: str, **data: Any) -> None:
        self.observers.emit(FleetEvent("adapt", device_id, {"result": result, **data}))
