"""Progressive delivery: after a key's quick build, its refinements, as persisted jobs any replica may run.

Refinement n of build key K is the job `K~rn` (registry.refinement_key) of kind `refine`; its spec is
K's build spec plus `refine: {of: K, parent: <artifact id>, number: n}`. It is queued when K's quick
build (n = 1) or refinement n - 1 yields an artifact, up to `engine.refinements(spec)`. Because it is a
job row under a lease like a build, a replica that dies mid-refinement loses it to another one and a
restarted server resumes it.

Quick builds go first: refinements are claimed only by the refine workers (never by the build
workers), a refine worker claims nothing while a quick build runs or waits on its replica, and a
running refinement yields at its next progress call when one arrives (it is queued again and starts
over later; a device's first model is worth more than a refinement's progress).

The outcome of refinement n:
- an artifact: stored, then made what K's cache serves with a compare-and-set on K's done job (only
  while that still points at the parent, so a refinement of a replaced artifact changes nothing:
  recorded as stage `stale`); then the refined hooks run (the MQTT bridge offers it to every device
  whose latest offer is the parent) and refinement n + 1 is queued from it;
- None (the engine found it not measurably better): stage `not better`, nothing is offered, and
  refinement n + 1 is queued from the same parent (a longer schedule, or the from-scratch candidate,
  may still beat it);
- skipped, stage `unwanted`, when no device wants K any more when it would start (every device it
  was offered to has moved to other tasks or budgets): the CPU goes to what devices need. A later cache
  hit on K queues it again (`revive`);
- an error: the job fails with its message; the quick model stays what K serves.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from edgecut.errors import EdgecutError
from edgecut.server.fleet.events import FleetEvent, Observers
from edgecut.server.fleet.jobs.leases import Leases, next_job
from edgecut.server.fleet.jobs.outcomes import Interrupted, Ready, RefinedHook
from edgecut.server.fleet.jobs.variants import store_variants
from edgecut.server.fleet.state.job_record import JobRecord, refinement_key
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.schema import DONE, FAILED, REFINE
from edgecut.server.fleet.state.store import Store
from edgecut.server.spec import BuildSpec, Engine, Refinement, spec_from_dict, spec_to_dict

logger = logging.getLogger(__name__)

NOT_BETTER, STALE, UNWANTED = "not better", "stale", "unwanted"


class _Yield(Interrupted):
    """A quick build needs the CPU: the refinement is queued again."""


class Refiner:
    """The refine workers: a peer of the job manager, sharing its leases, the registry and the store.

    `busy()` says whether a quick build runs or waits on this replica (refinements make way);
    `refined(ready)` runs after a refinement became what its key serves (the job manager's hooks).
    """

    def __init__(
        self,
        engine: Engine,
        store: Store,
        registry: Registry,
        leases: Leases,
        observers: Observers,
        busy: Callable[[], bool],
        refined: RefinedHook,
        settled: Callable[[str], None] = lambda key: None,
    ) -> None:
        """`settled(build_key)`: the key's refinements ended without another model (not better, failed,
        stale or unwanted): whoever waits for a model of it held below the quality floor gets it now."""
        self.engine, self.store, self.registry, self.leases = engine, store, registry, leases
        self.observers, self.busy, self.refined, self.settled = observers, busy, refined, settled
        # its own wake-up: waiting on the build workers' event would clear it under them
        self.wake = threading.Event()

    def queue(self, build_key: str, spec: BuildSpec, parent_artifact_id: str, number: int) -> bool:
        """Queue refinement `number` of `build_key` from `parent_artifact_id`, if the engine makes one."""
        try:
            total = self.engine.refinements(spec)
        except Exception:  # an engine bug must not fail the quick build that was just delivered
            logger.exception("engine.refinements failed for %s; no refinement", build_key)
            return False
        if number < 1 or number > total:
            return False
        doc: dict[str, Any] = {
            **spec_to_dict(spec),
            "refine": {"of": build_key, "parent": parent_artifact_id, "number": number, "total": total},
        }
        key = refinement_key(build_key, number)
        self.registry.jobs.create(key, doc, kind=REFINE)
        logger.info(
            "queued refinement %d/%d of %s (from %s)", number, total, build_key, parent_artifact_id[:12]
        )
        self._observe(key, "queued", 0.0, {**doc["refine"], "tasks": list(spec.tasks)})
        self.wake.set()
        return True

    def revive(self, build_key: str, served: int) -> None:
        """A device asked for `build_key` again: its next refinement runs if it was skipped as unwanted."""
        # reads first: this runs on every cache hit, and almost always there is nothing to revive;
        # the next refinement is past any that were not better (they queued theirs from the same parent)
        number = served + 1
        rec = self.registry.jobs.get(refinement_key(build_key, number))
        while rec is not None and rec.stage == NOT_BETTER:
            number += 1
            rec = self.registry.jobs.get(refinement_key(build_key, number))
        key = refinement_key(build_key, number)
        if rec is None or rec.stage != UNWANTED:
            return
        if self.registry.jobs.revive(key, UNWANTED):
            logger.info("refinement %s queued again: %s is wanted again", key, build_key)
            self._observe(key, "queued", 0.0, {"of": build_key})
            self.wake.set()

    # -- the refine workers ---------------------------------------------------------------------

    def work(self) -> None:
        while not self.leases.stopping:
            rec = next_job(self.leases, self.registry.jobs, self.wake, REFINE, "a refinement", self.busy)
            if rec is None:
                continue
            if rec.state == FAILED:  # the crash cap: the quick model stays what the key serves
                logger.error("refinement %s failed: %s", rec.build_key, rec.error_message)
                self._observe(rec.build_key, "failed", 1.0, {"error": rec.error_message})
                self.settled(str(rec.spec.get("refine", {}).get("of", "")))
                continue
            self.run(rec)

    def run(self, rec: JobRecord) -> None:
        leases, key, gen = self.leases, rec.build_key, rec.generation
        try:
            info = rec.spec["refine"]
            of, parent, number = str(info["of"]), str(info["parent"]), int(info["number"])
            spec = spec_from_dict(rec.spec)
            self.engine.validate(spec)
        except Exception as exc:  # persisted by an older server or for another base model
            logger.warning("dropping refinement %s: %s", key, exc)
            self._finish(
                key, gen, FAILED, stage="failed", error_code="BUILD_FAILED", error_message=str(exc)[:500]
            )
            return
        lineage = {"parent_artifact_id": parent, "refinement": number}
        current = self.registry.jobs.get(of)
        if current is None or current.state != DONE or current.artifact_id != parent:
            logger.info("refinement %s: %s no longer serves %s; skipped", key, of, parent[:12])
            self._finish(key, gen, DONE, stage=STALE, **lineage)
            return
        if not self.registry.offers.wanted(of, list(spec.tasks), spec.budget.bucket(), parent):
            logger.info("refinement %s: no device wants %s any more; skipped until asked again", key, of)
            self._finish(key, gen, DONE, stage=UNWANTED, **lineage)
            return
        try:
            parent_meta = self.store.get(parent).meta
        except EdgecutError as exc:
            logger.warning("refinement %s: parent %s is gone from the store (%s)", key, parent[:12], exc)
            if self._finish(key, gen, DONE, stage=STALE, **lineage):
                self.settled(of)
            return
        leases.hold(key)
        self._observe(key, "running", 0.0, {**info, "tasks": list(spec.tasks)})
        stages = {"running"}

        def progress(stage: str, fraction: float, detail: str = "") -> None:
            if leases.should_stop(key):
                raise Interrupted
            if self.busy():
                raise _Yield
            if stage not in stages:
                stages.add(stage)
                if not self.registry.jobs.update(key, gen, stage=stage, fraction=fraction):
                    leases.lose(key)  # taken over while we were not looking
                    raise Interrupted
            self._observe(key, stage, min(max(fraction, 0.0), 1.0), {**info, "detail": detail})

        try:
            built = self.engine.refine(spec, Refinement(parent, parent_meta, number), progress)
            artifact, notes = None, ""
            if built is not None:
                try:
                    meta = built.meta.model_copy(update={"build_key": of})
                    artifact = self.store.put_file(built.onnx_path, meta)
                    store_variants(self.store, self.registry, artifact, built)
                    notes = "".join(f"; {n}" for n in built.notes)
                finally:
                    built.cleanup()
        except Interrupted as exc:
            lost = leases.let_go(key)
            if not lost:
                self.registry.jobs.release(key, leases.owner)
            why = "a quick build came first" if isinstance(exc, _Yield) else "stopping or lost the lease"
            logger.info("refinement %s interrupted (%s); queued again", key, why)
            return
        except Exception as exc:
            logger.exception("refinement %s failed", key)
            if self._finish(
                key, gen, FAILED, stage="failed", error_code="BUILD_FAILED", error_message=str(exc)[:500]
            ):
                self.settled(of)
            return
        if artifact is None:
            logger.info("refinement %s is not better than %s; nothing shipped", key, parent[:12])
            if self._finish(key, gen, DONE, stage=NOT_BETTER, **lineage) and not self.queue(
                of, spec, parent, number + 1
            ):
                self.settled(of)
            return
        stage = self.registry.jobs.finish_refinement(
            key, leases.owner, gen, of, parent, artifact.artifact_id, number
        )
        leases.let_go(key)
        if stage is None:
            _dropped(key)
            return
        self._observe(key, stage, 1.0, {"artifact_id": artifact.artifact_id})
        if stage == STALE:
            logger.info("refinement %s: %s moved on from %s meanwhile; not served", key, of, parent[:12])
            return
        logger.info("refinement %d of %s ready: artifact %s%s", number, of, artifact.artifact_id[:12], notes)
        self.refined(Ready(of, artifact, False, parent, number))
        self.queue(of, spec, artifact.artifact_id, number + 1)

    def _finish(self, key: str, generation: int, state: str, **fields: Any) -> bool:
        """Record the refinement's end; False (nothing recorded) when claim `generation` lost it."""
        recorded = self.registry.jobs.finish(key, self.leases.owner, generation, state=state, **fields)
        self.leases.let_go(key)
        if not recorded:
            _dropped(key)
            return False
        self._observe(key, fields.get("stage", state), 1.0, {"artifact_id": fields.get("artifact_id", "")})
        return True

    def _observe(self, key: str, stage: str, fraction: float, data: dict[str, Any]) -> None:
        self.observers.emit(
            FleetEvent("refinement", data={"build_key": key, "stage": stage, "fraction": fraction, **data})
        )


def _dropped(key: str) -> None:
    logger.warning(
        "refinement %s: this replica lost its lease before it finished (stalled?); result dropped", key
    )
