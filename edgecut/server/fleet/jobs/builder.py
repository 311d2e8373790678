"""The build workers: claim a queued job under a lease, build it, record the outcome (fenced), report it.

A peer of the refiner (refiner.py): both share this replica's `Leases`; the job manager is the `Desk`
they report to (its listeners, waiters and finish hooks). A build is interrupted at its next progress
call when the server stops or the lease was lost (`Interrupted`); a stopped build is queued again for
any replica, a lost one is left to the replica that holds it now.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from edgecut.server.errors import BuildError, ServerError
from edgecut.server.fleet import error_map
from edgecut.server.fleet.events import Observers
from edgecut.server.fleet.jobs.leases import Leases, next_job
from edgecut.server.fleet.jobs.outcomes import Failed, Interrupted, Outcome, Progress, Ready, job_event
from edgecut.server.fleet.jobs.variants import store_variants
from edgecut.server.fleet.state.job_record import JobRecord
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.schema import DONE, FAILED
from edgecut.server.fleet.state.store import Store
from edgecut.server.spec import BuildSpec, Engine, spec_from_dict

logger = logging.getLogger(__name__)


class Desk(Protocol):
    """Who the build workers report to (the job manager)."""

    def track(self, key: str, spec: BuildSpec) -> None:
        """A build of `key` starts here: listeners may attach to it."""

    def progress(self, event: Progress) -> None: ...

    def finish(self, key: str, outcome: Outcome, *, tracked: bool = False) -> None:
        """The job ended (recorded): tell its listeners, waiters and hooks."""

    def built(self, key: str, spec: BuildSpec, artifact_id: str, next_refinement: int) -> None:
        """A quick build delivered `artifact_id`: its refinements may follow."""


class Builder:
    def __init__(
        self,
        engine: Engine,
        store: Store,
        registry: Registry,
        leases: Leases,
        observers: Observers,
        desk: Desk,
        wake: threading.Event,
    ) -> None:
        """`wake`: set when new work is queued here, so a worker looks at once instead of at the next poll."""
        self.engine, self.store, self.registry, self.leases = engine, store, registry, leases
        self.observers, self.desk, self.wake = observers, desk, wake

    def work(self) -> None:
        while not self.leases.stopping:
            rec = next_job(self.leases, self.registry.jobs, self.wake)
            if rec is None:
                continue
            if rec.state == FAILED:  # the crash cap: tell whoever waits here, and the hooks' devices
                logger.error("job %s failed: %s", rec.build_key, rec.error_message)
                self.desk.finish(rec.build_key, Failed(rec.build_key, rec.error_code, rec.error_message))
                continue
            if rec.attempts > 1:
                logger.info("job %s: attempt %d (taken over or resumed)", rec.build_key, rec.attempts)
            self.run(rec)

    def run(self, rec: JobRecord) -> None:
        key = rec.build_key
        try:
            spec = spec_from_dict(rec.spec)
            self.engine.validate(spec)
        except Exception as exc:  # persisted by an older server or for another base model
            logger.warning("dropping job %s: %s", key, exc)
            self._end(key, rec.generation, self._failed(key, exc), tracked=False)
            return
        self.desk.track(key, spec)
        self.leases.hold(key)
        self.observers.emit(job_event(key, "running", 0.0, tasks=list(spec.tasks)))
        stage_seen = {"running"}

        def progress(stage: str, fraction: float, detail: str = "") -> None:
            if self.leases.should_stop(key):
                raise Interrupted
            if stage not in stage_seen:  # persist stage changes only, not every percent
                stage_seen.add(stage)
                if not self.registry.jobs.update(key, rec.generation, stage=stage, fraction=fraction):
                    self.leases.lose(key)  # taken over while we were not looking
                    raise Interrupted
            self.desk.progress(Progress(key, stage, min(max(fraction, 0.0), 1.0), detail))

        try:
            built = self.engine.build(spec, progress)
            try:
                meta = built.meta.model_copy(update={"build_key": built.meta.build_key or key})
                artifact = self.store.put_file(built.onnx_path, meta)
                store_variants(self.store, self.registry, artifact, built)
                lineage = built.parent_artifact_id, built.refinement
                notes = list(built.notes)
            finally:
                built.cleanup()
        except Interrupted:
            if self.leases.let_go(key):
                logger.info("job %s: another replica builds it now; watching it", key)
            else:
                self.registry.jobs.release(key, self.leases.owner)
                logger.info("job %s interrupted by shutdown; queued again for any replica", key)
            return
        except Exception as exc:
            if not isinstance(exc, ServerError):
                logger.exception("job %s failed", key)
            self._end(key, rec.generation, self._failed(key, exc))
            return
        if self._end(key, rec.generation, Ready(key, artifact, False, *lineage)):
            logger.info(
                "job %s ready: artifact %s (%d bytes)%s",
                key,
                artifact.artifact_id,
                artifact.size,
                "".join(f"; {n}" for n in notes),  # e.g. "quick recovery: 37 of 60 steps (8 s time limit)"
            )
            self.desk.built(key, spec, artifact.artifact_id, lineage[1] + 1)

    def _end(self, key: str, generation: int, outcome: Outcome, *, tracked: bool = True) -> bool:
        """Persist the outcome, give up the lease, then tell listeners and hooks.

        False when claim `generation` lost the job meanwhile: nothing is recorded or told, and the job
        stays active in the job manager, followed in the registry like one another replica builds.
        """
        if isinstance(outcome, Ready):
            fields: dict[str, Any] = {
                "state": DONE,
                "stage": "ready",
                "fraction": 1.0,
                "artifact_id": outcome.artifact.artifact_id,
                "parent_artifact_id": outcome.parent_artifact_id,
                "refinement": outcome.refinement,
            }
        else:
            # the device and the API see the reason; so does whoever reads the server's log
            logger.warning("build %s failed (%s): %s", key[:12], outcome.code, outcome.message)
            fields = {
                "state": FAILED,
                "stage": "failed",
                "error_code": outcome.code,
                "error_message": outcome.message,
            }
        recorded = self.registry.jobs.finish(key, self.leases.owner, generation, **fields)
        self.leases.let_go(key)
        if not recorded:
            logger.warning(
                "job %s: this replica lost its lease before it finished (stalled?); its result is "
                "dropped and the job's current holder decides",
                key,
            )
            return False
        self.desk.finish(key, outcome, tracked=tracked)
        return True

    def _failed(self, key: str, exc: BaseException) -> Failed:
        if not isinstance(exc, ServerError):
            exc = BuildError(f"building the model failed on the server ({type(exc).__name__}: {exc})")
        return Failed(key, error_map.error_code(exc), error_map.error_sentence(exc))
