"""Build jobs: one per build key (single flight, also across server replicas), built off the network threads.

`JobManager.submit(spec, listener, waiter)`:

1. `engine.validate(spec)` raises UnknownTask/EmptyTasks/ImpossibleBudget before anything is queued;
2. the build key's job is already active here -> the caller attaches to it (its listener first gets
   the latest progress, then every later event);
3. the registry has a done job for the key whose artifact the store still holds *and whose bytes still
   hash to its id* -> cache hit (a corrupt one is quarantined by the store and built again);
4. otherwise, within the queue cap and the requester's build rate (limits.py), the job is persisted as
   queued (or joined, when another replica queued or runs it).

The registry is the queue. Workers `claim` a job under a lease (see state/jobs.py), so any replica on
the same database may build any queued job, one replica per key; the lease is renewed while the build
runs, and a replica that dies stops renewing it: when it expires another replica takes the job over.
A job this replica waits for but another one builds is watched in the registry until it ends.
Results are fenced (state/jobs.py): a replica that stalled past its lease and wakes up finds its
result refused, drops it and follows the new holder's job like any remote one; a job whose holders
died or stalled `max_crashes` times ends failed, and its waiting devices are told.

Events (`Progress`, then exactly one of `Ready` / `Failed`) fan out to every listener under one lock,
so each listener sees them in order. Devices that asked over MQTT are `waiter`s persisted in the
registry; the finish hooks (the MQTT bridge) answer them on whichever replica sees the job end, also
after a restart. `stop()` interrupts a running build at its next progress callback and queues it
again for any replica (or the next start) to take.

Build workers (builder.py) and refine workers (refiner.py) are peers sharing this replica's leases.
Progressive delivery: once a key's quick build is done, its refinements are queued as
jobs of their own kind, claimed by separate workers, so they never hold up a device's first model.
A model below the quick model's quality floor is held back while a refinement may replace it
(quality_floor.py): its outcome goes out `held`, and once the refinements end the key's model goes to
whoever still waits.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgecut.server.errors import QueueFullError, ServerError
from edgecut.server.fleet.events import Observers
from edgecut.server.fleet.jobs.adapter import Adapter, AdaptPolicy
from edgecut.server.fleet.jobs.builder import Builder
from edgecut.server.fleet.jobs.leases import Leases
from edgecut.server.fleet.jobs.outcomes import (
    Event,
    Failed,
    FinishHook,
    Listener,
    Outcome,
    Progress,
    Ready,
    RefinedHook,
    job_event,
)
from edgecut.server.fleet.jobs.quality_floor import QualityFloor
from edgecut.server.fleet.jobs.refiner import Refiner
from edgecut.server.fleet.jobs.scrub import Scrubber
from edgecut.server.fleet.policy.limits import RateLimiter
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.schema import DONE, FAILED
from edgecut.server.fleet.state.store import Store
from edgecut.server.fleet.state.waiters import Waiter
from edgecut.server.spec import BuildSpec, Engine, spec_to_dict

logger = logging.getLogger(__name__)


@dataclass
class Job:
    build_key: str
    spec: BuildSpec
    last: Progress
    listeners: list[Listener] = field(default_factory=list)


@dataclass(frozen=True)
class Submission:
    build_key: str
    job: Job | None = None  # set when the caller attached to a queued/running job
    ready: Ready | None = None  # set on a cache hit


class JobManager:
    def __init__(
        self,
        engine: Engine,
        store: Store,
        registry: Registry,
        workers: int = 1,
        max_queued: int = 64,
        build_limiter: RateLimiter | None = None,
        observers: Observers | None = None,
        *,
        owner: str = "",
        lease_s: float = 30.0,
        poll_s: float = 1.0,
        refine_workers: int = 1,
        max_crashes: int = 3,
        quick_floor: float = -math.inf,
        adapt_workers: int = 1,
        adapt_policy: AdaptPolicy = AdaptPolicy(),
    ) -> None:
        """`quick_floor`: Δm (%) below which a model is held back while a refinement may replace it;
        `adapt_workers` run adaptations to devices' statistics (issue 31, adapter.py) by `adapt_policy`."""
        if workers < 1 or refine_workers < 0 or max_crashes < 0 or adapt_workers < 0:
            raise ValueError("workers must be >= 1, refine_workers, adapt_workers and max_crashes >= 0")
        self.engine, self.store, self.registry = engine, store, registry
        self.max_queued, self.build_limiter = max_queued, build_limiter
        self.observers = observers or Observers()
        self.leases = Leases(owner, lease_s, poll_s, max_crashes)
        self.owner = self.leases.owner  # this replica's name on the leases it holds
        self._workers_n, self._refine_workers_n = workers, refine_workers
        self._adapt_workers_n = adapt_workers
        self._lock = threading.RLock()
        self._active: dict[str, Job] = {}  # jobs someone here listens to or waits for, or builds
        self._threads: list[threading.Thread] = []
        self._hooks: list[FinishHook] = []
        self._refined_hooks: list[RefinedHook] = []
        self._stopping = self.leases.stop_event
        self._wake = threading.Event()  # new local work: workers look at once instead of at the next poll
        # a peer, not a part: it shares the leases and the store, and asks whether quick builds wait here
        self.builder = Builder(engine, store, registry, self.leases, self.observers, self, self._wake)
        self.floor = QualityFloor(registry, quick_floor, engine.refinements)
        self.scrubber = Scrubber(store, registry, lambda spec: self.submit(spec).build_key)
        self.refiner = Refiner(
            engine,
            store,
            registry,
            self.leases,
            self.observers,
            busy=self.quick_builds_here,
            refined=self.refined,
            settled=self.settled,
        )
        self.adapter = Adapter(
            engine, store, registry, self.leases, self.observers, self.quick_builds_here, adapt_policy
        )
        self._refined_hooks.append(self.adapter.on_refined)

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Queue again what this replica held before (same `owner`), start the workers and the watcher."""
        self._stopping.clear()
        for key in self.registry.jobs.release_leases(self.owner):
            logger.info("job %s was ours when we stopped; queued again", key)
        for i in range(self._workers_n):
            self._spawn(self.builder.work, f"edgecut-job-{i}")
        for i in range(self._refine_workers_n):
            self._spawn(self.refiner.work, f"edgecut-refine-{i}")
        for i in range(self._adapt_workers_n):
            self._spawn(self.adapter.work, f"edgecut-adapt-{i}")
        self._spawn(self._watch, "edgecut-job-watch")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the workers; a running build stops at its next progress call and is queued again."""
        self._stopping.set()
        self._wake.set()
        self.refiner.wake.set()
        self.adapter.wake.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()
        with self._lock:
            jobs, self._active = list(self._active.values()), {}
            for job in jobs:
                self._notify(job, Failed(job.build_key, "INTERNAL", "the server is shutting down; ask again"))

    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def add_finish_hook(self, hook: FinishHook) -> None:
        self._hooks.append(hook)

    def add_refined_hook(self, hook: RefinedHook) -> None:
        """`hook(ready)` after a refinement became what its key serves (the bridge offers it on)."""
        self._refined_hooks.append(hook)

    def refined(self, ready: Ready) -> None:
        ready = self.floor.apply(ready)
        for hook in self._refined_hooks:
            try:
                hook(ready)
            except Exception:
                logger.exception("refined hook %r failed for %s", hook, ready.build_key)

    def quick_builds_here(self) -> bool:
        """A quick build runs here, or a device asked this replica for one (refinements make way)."""
        with self._lock:
            return bool(self._active)

    # -- requests ------------------------------------------------------------------------------

    def build_key(self, spec: BuildSpec) -> str:
        return spec.build_key(self.engine.base_model_id)

    def submit(
        self,
        spec: BuildSpec,
        listener: Listener | None = None,
        waiter: Waiter | None = None,
        requester: str = "",
    ) -> Submission:
        """Validate, then attach to the key's job, answer from the store, or queue a new job.

        Only a new job costs `requester` (a device id) a token of its build rate.
        """
        self.engine.validate(spec)
        key = self.build_key(spec)
        with self._lock:
            if self._stopping.is_set():
                raise ServerError("the server is shutting down; ask again in a moment")
            job = self._active.get(key)
            if job is None:
                hit = self._cached(key)
                if hit is None:
                    if len(self._active) >= self.max_queued:
                        raise QueueFullError(
                            f"the build queue is full ({self.max_queued} builds queued or running); "
                            "ask again in a minute"
                        )
                    if self.build_limiter is not None and requester:
                        self.build_limiter.check(requester, "new build requests")
                    rec = self.registry.jobs.ensure(key, spec_to_dict(spec))
                    if rec.state == DONE:  # done meanwhile by another replica, or its artifact is gone
                        hit = self._cached(key)
                        if hit is None:
                            self.registry.jobs.create(key, spec_to_dict(spec))
                if hit is not None:
                    source = "repeat" if self._offered(requester) == hit.artifact.artifact_id else "cache"
                    self._observe(key, "ready", 1.0, source=source, artifact_id=hit.artifact.artifact_id)
                    if listener is not None:
                        listener(hit)
                    return Submission(key, ready=hit)
                job = Job(key, spec, Progress(key, "queued", 0.0, "waiting for a worker"))
                self._active[key] = job
                self._wake.set()
                self._observe(key, "queued", 0.0, source="build", tasks=list(spec.tasks))
                logger.info("queued job %s (%s, budget %s)", key, ",".join(spec.tasks), spec.budget.bucket())
            else:
                self._observe(key, job.last.stage, job.last.fraction, source="joined")
            if waiter is not None:
                self.registry.waiters.add(key, waiter.device_id, waiter.needs_seq)
            if listener is not None:
                job.listeners.append(listener)
                _call(listener, job.last)
            return Submission(key, job=job)

    def detach(self, build_key: str, listener: Listener) -> None:
        with self._lock:
            job = self._active.get(build_key)
            if job is not None and listener in job.listeners:
                job.listeners.remove(listener)

    def active(self) -> list[str]:
        with self._lock:
            return list(self._active)

    def _offered(self, requester: str) -> str:
        """What `requester` (a device) was last offered: asking for it again (an unpin, a restart) is a
        repeat, not a cache hit (one saved build)."""
        dev = self.registry.devices.get(requester) if requester else None
        return str(dev.get("offered_artifact_id", "")) if dev else ""

    def _cached(self, key: str) -> Ready | None:
        rec = self.registry.jobs.get(key)
        if rec is None or rec.state != DONE or not self.store.verify(rec.artifact_id):
            return None
        self.refiner.revive(key, rec.refinement)
        hit = Ready(key, self.store.get(rec.artifact_id), True, rec.parent_artifact_id, rec.refinement)
        return self.floor.apply(hit)

    def settled(self, key: str) -> None:
        """`key`'s refinements ended: devices still waiting for it (its model was held below the quality
        floor) are answered with the model it serves now."""
        try:
            ready = self._cached(key)
        except Exception:
            logger.exception("cannot read what %s serves; its waiting devices wait on", key)
            return
        if ready is None or ready.held:
            return
        for hook in self._hooks:
            try:
                hook(ready)
            except Exception:
                logger.exception("finish hook %r failed for settled job %s", hook, key)

    # -- workers -------------------------------------------------------------------------------

    def _watch(self) -> None:
        """Renew our leases; follow the jobs we wait for that another replica builds."""
        leases = self.leases
        interval = min(leases.poll_s, leases.lease_s / 3)
        while not self._stopping.wait(interval):
            try:
                building = leases.held()
                with self._lock:
                    remote = [k for k in self._active if k not in building]
                lost = self.registry.jobs.renew_leases(self.owner, building, leases.lease_s)
                if lost:
                    logger.warning("lost the lease on %s (another replica took over): stopping", lost)
                    for key in lost:
                        leases.lose(key)
                for key in remote:
                    self._follow(key)
            except Exception:
                logger.exception("job watcher failed; retrying")

    def _follow(self, key: str) -> None:
        """Pass a remotely built job's state on to our listeners, and its end to our hooks."""
        rec = self.registry.jobs.get(key)
        if rec is None:
            return
        if rec.state == DONE:
            if self.store.exists(rec.artifact_id):
                ready = Ready(
                    key, self.store.get(rec.artifact_id), False, rec.parent_artifact_id, rec.refinement
                )
                self.finish(key, ready, tracked=True)
            else:  # built, then lost from the store: build it again
                logger.warning("job %s is done but its artifact %s is not in the store", key, rec.artifact_id)
                self.registry.jobs.create(key, rec.spec)
                self._wake.set()
            return
        if rec.state == FAILED:
            self.finish(key, Failed(key, rec.error_code or "BUILD_FAILED", rec.error_message), tracked=True)
            return
        with self._lock:
            job = self._active.get(key)
            where = f"on {rec.owner}" if rec.owner else "waiting for a worker"
            if job is not None and (job.last.stage, job.last.fraction) != (rec.stage, rec.fraction):
                self._emit(job, Progress(key, rec.stage, rec.fraction, where))

    # -- the builder's desk ----------------------------------------------------------------------

    def track(self, key: str, spec: BuildSpec) -> None:
        with self._lock:
            self._active.setdefault(key, Job(key, spec, Progress(key, "running", 0.0)))

    def progress(self, event: Progress) -> None:
        with self._lock:
            job = self._active.get(event.build_key)
        if job is not None:
            self._emit(job, event)

    def built(self, key: str, spec: BuildSpec, artifact_id: str, next_refinement: int) -> None:
        self.refiner.queue(key, spec, artifact_id, next_refinement)

    def _emit(self, job: Job, event: Progress) -> None:
        with self._lock:
            job.last = event
            self._notify(job, event)
        self._observe(event.build_key, event.stage, event.fraction, detail=event.detail)

    def _observe(self, key: str, stage: str, fraction: float, **data: Any) -> None:
        self.observers.emit(job_event(key, stage, fraction, **data))

    def _notify(self, job: Job, event: Event) -> None:
        for listener in list(job.listeners):
            _call(listener, event)

    def finish(self, key: str, outcome: Outcome, *, tracked: bool = False) -> None:
        """Tell `key`'s listeners and the finish hooks how it ended.

        `tracked`: the job is in the active set, and only whoever takes it out tells: the builder and
        the watcher both see a job end here (between the lease's release and this call), and the hooks
        must hear it once.
        """
        with self._lock:
            job = self._active.pop(key, None)
        if tracked and job is None:
            return
        if isinstance(outcome, Ready):
            outcome = self.floor.apply(outcome)
            if outcome.held:
                logger.warning("job %s: %s", key[:12], outcome.held)
        if job is not None:
            with self._lock:
                self._notify(job, outcome)
        self.refiner.wake.set()  # one quick build fewer: a refinement may start now
        if isinstance(outcome, Ready):
            self._observe(key, "ready", 1.0, artifact_id=outcome.artifact.artifact_id)
        else:
            self._observe(key, "failed", 1.0, error=outcome.message, code=outcome.code)
        for hook in self._hooks:
            try:
                hook(outcome)
            except Exception:
                logger.exception("finish hook %r failed for job %s", hook, key)


def _call(listener: Listener, event: Event) -> None:
    try:
        listener(event)
    except Exception:
        logger.exception("job listener failed on %s", type(event).__name__)
