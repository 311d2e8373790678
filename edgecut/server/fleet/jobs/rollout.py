"""Staged rollouts: a new variant for a cohort goes to canaries first, then to everyone or nobody.

A *cohort* is the devices of one class, budget and task set (they are offered the same build). When a
build is about to replace the model a device of a cohort serves for the same tasks, `RolloutManager.gate`
(the MQTT bridge's offer gate) starts a rollout instead of offering it to everyone:

    (quality gate fails) -> rejected                     nobody receives the variant
    canary --(canaries within thresholds)--> promoted    offered to the whole cohort
           --(a threshold broken / timeout)--> rolled_back   canaries get the old model again
           --(a newer variant arrives)--> superseded

While a rollout is in `canary`, the other devices of the cohort (and devices joining it) are offered
the old model; after `rolled_back` or `rejected` everyone keeps the old model, also after a restart
(rollouts are persisted). The verdicts are pure functions in rollout_policy.py; this module keeps the
state, watches fleet events, and publishes the offers. A first model, or a model for new tasks, is
never held back: there is nothing to compare it with and the device needs it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgecut.errors import EdgecutError
from edgecut.server.fleet.events import FleetEvent, Observers
from edgecut.server.fleet.jobs.lineage import Lineage
from edgecut.server.fleet.jobs.outcomes import Ready
from edgecut.server.fleet.jobs.rollout_policy import (
    CANARY,
    PROMOTED,
    REJECTED,
    ROLLED_BACK,
    SUPERSEDED,
    CanaryWatch,
    RolloutSettings,
    baseline_p95,
    cohort_p95,
    judge_canaries,
    judge_quality,
    pick_canaries,
    task_quality,
)
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.store import Store

logger = logging.getLogger(__name__)

TICK_S = 1.0  # how often time-based verdicts (observe_s, timeout_s) are checked


Cohort = tuple[str, str, tuple[str, ...]]  # device class, budget bucket, sorted tasks


@dataclass
class _Live:
    """A rollout in memory: its row's fields plus what the canaries and the rest of the cohort showed."""

    row: dict[str, Any]
    watches: dict[str, CanaryWatch] = field(default_factory=dict)
    control: dict[str, float] = field(default_factory=dict)  # non-canary device -> p95 on the baseline

    @property
    def cohort(self) -> Cohort:
        return self.row["device_class"], self.row["budget"], tuple(self.row["tasks"])


class Offerer(Protocol):
    """What the manager needs from the MQTT bridge: publish a retained offer, bypassing the gate."""

    def offer(self, device_id: str, seq: int, ready: Ready, held: bool = False) -> None: ...


class RolloutManager:
    def __init__(
        self, registry: Registry, store: Store, settings: RolloutSettings, observers: Observers | None = None
    ) -> None:
        self.registry, self.store, self.settings = registry, store, settings
        self.observers = observers or Observers()
        self.offerer: Offerer | None = None
        self.lineage = Lineage(registry, store)
        self._lock = threading.RLock()
        self._live: dict[str, _Live] = {r["id"]: _Live(r) for r in self.rollouts(states=(CANARY,))}
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------------------------

    def start(self, offerer: Offerer) -> None:
        self.offerer = offerer
        self._stop.clear()
        self._ticker = threading.Thread(target=self._tick, name="edgecut-rollouts", daemon=True)
        self._ticker.start()

    def stop(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(5)
            self._ticker = None

    def _tick(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.evaluate()
            except Exception:
                logger.exception("evaluating rollouts failed")

    # -- reads ---------------------------------------------------------------------------------

    def rollouts(self, states: tuple[str, ...] | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""
        return self.registry.rollouts.all(states, limit)

    def state_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.rollouts(limit=100_000):
            counts[r["state"]] = counts.get(r["state"], 0) + 1
        return counts

    def progress(self, rollout_id: str) -> dict[str, Any]:
        """What the dashboard shows of a live rollout: each canary's watch and the baseline p95."""
        with self._lock:
            live = self._live.get(rollout_id)
            if live is None:
                return {}
            return {
                "baseline_p95_ms": baseline_p95(live.control, live.row["baseline_p95_ms"]),
                "canaries": {
                    d: {
                        "swapped_at": w.swapped_at,
                        "answered": w.answered,
                        "error_rate": w.error_rate,
                        "p95_ms": w.p95_ms,
                        "refused": w.refused,
                    }
                    for d, w in live.watches.items()
                },
            }

    # -- the offer gate ------------------------------------------------------------------------

    def gate(self, device_id: str, seq: int, ready: Ready) -> Ready | None:
        """The build to offer `device_id` instead of `ready` (the same when no rollout applies)."""
        if not self.settings.enabled:
            return ready
        dev = self.registry.devices.get(device_id)
        if dev is None:
            return ready
        candidate = ready.artifact.artifact_id
        cohort: Cohort = (dev["device_class"], dev["budget"], tuple(sorted(ready.artifact.meta.tasks)))
        with self._lock:
            serving = str(dev["artifact_id"] or "")
            # a device serving a model of these tasks keeps it rather than take a variant nobody vouched for
            keeps = bool(serving) and serving != candidate and self.lineage.same_tasks(serving, cohort[2])
            live = self._current(cohort)
            if live is not None and live.row["candidate_artifact"] == candidate:
                return self._route(live, device_id, ready, keeps)
            if ready.refinement and serving and self.lineage.refines(serving, ready):
                return ready  # the served model's weights trained further: not a new variant (operations.md)
            replaces = keeps and self.lineage.same_budget(serving, ready.build_key)
            if not replaces:
                # a first model or new tasks: never held back, but a cohort that decided against this
                # artifact (or is still canarying another) gets the model it trusts
                decided = self._decided(cohort, candidate)
                if decided is not None and decided["state"] in (ROLLED_BACK, REJECTED):
                    return self.lineage.baseline_ready(decided) or (None if keeps else ready)
                if live is not None:
                    return self._route(live, device_id, ready, False)
                return ready
            decided = self._decided(cohort, candidate)
            if decided is not None and decided["state"] in (ROLLED_BACK, REJECTED):
                return self.lineage.baseline_ready(
                    decided
                )  # None when it is gone: the device keeps its model
            if decided is not None and decided["state"] == PROMOTED:
                return ready
            live = self._begin(cohort, self.lineage.baseline(serving, ready), ready, device_id)
            return self._route(live, device_id, ready, True)

    def refinements_held(self, ready: Ready) -> bool:
        """True while the quick model of `ready`'s key is in canary: its refinements wait for the verdict
        (a canary must serve the candidate it is judged on); promotion offers the key's best version."""
        with self._lock:
            return any(lv.row["candidate_build_key"] == ready.build_key for lv in self._live.values())

    def _current(self, cohort: Cohort) -> _Live | None:
        return next((lv for lv in self._live.values() if lv.cohort == cohort), None)

    def _decided(self, cohort: Cohort, candidate: str) -> dict[str, Any] | None:
        for r in self.rollouts(states=(PROMOTED, ROLLED_BACK, REJECTED)):
            if (r["device_class"], r["budget"], tuple(r["tasks"])) == cohort and r[
                "candidate_artifact"
            ] == candidate:
                return r
        return None

    def _route(self, live: _Live, device_id: str, ready: Ready, keeps: bool) -> Ready | None:
        """`ready` for a canary or after promotion, else the cohort's baseline. When the baseline is
        gone from the store (its bytes rotted), a device that `keeps` a model of these tasks is offered
        nothing (it keeps serving it); one without a model gets `ready`, as a first model is never held."""
        state = live.row["state"]
        if state == PROMOTED or (state == CANARY and device_id in live.row["canaries"]):
            return ready
        return self.lineage.baseline_ready(live.row) or (None if keeps else ready)

    def _begin(self, cohort: Cohort, baseline: str, ready: Ready, asking: str) -> _Live:
        device_class, budget, tasks = cohort
        members = self._members(cohort)
        ids, canaries = pick_canaries(members, asking, self.settings)
        try:
            base_meta = self.store.meta(baseline)
            base_key = base_meta.build_key
        except EdgecutError:
            base_meta, base_key = None, ""
        quality = judge_quality(ready.artifact.meta, base_meta, self.settings)
        for old in [lv for lv in self._live.values() if lv.cohort == cohort]:
            self._decide(old, SUPERSEDED, f"superseded by {ready.artifact.artifact_id[:12]}", offer=False)
        row: dict[str, Any] = {
            "id": uuid.uuid4().hex[:16],
            "device_class": device_class,
            "budget": budget,
            "tasks": list(tasks),
            "baseline_artifact": baseline,
            "baseline_build_key": base_key,
            "candidate_artifact": ready.artifact.artifact_id,
            "candidate_build_key": ready.build_key,
            "canaries": canaries,
            "cohort": ids,
            "state": CANARY if quality.ok else REJECTED,
            "reason": "" if quality.ok else quality.reason,
            "quality": {
                "candidate": task_quality(ready.artifact.meta),
                "baseline": task_quality(base_meta) if base_meta else {},
            },
            "baseline_p95_ms": cohort_p95(members, baseline),
            "created": time.time(),
            "decided": None if quality.ok else time.time(),
        }
        self.registry.rollouts.add(row)
        live = _Live(row, {d: CanaryWatch() for d in canaries})
        self._event(row, announce=True)
        if not quality.ok:
            logger.warning(
                "rollout %s rejected %s: %s", row["id"], row["candidate_artifact"][:12], quality.reason
            )
            return live
        self._live[row["id"]] = live
        logger.info(
            "rollout %s: %s for %s/%s/%s goes to canaries %s first (cohort of %d)",
            row["id"],
            row["candidate_artifact"][:12],
            device_class,
            budget,
            ",".join(tasks),
            ",".join(canaries),
            len(ids),
        )
        for d in canaries:
            if d != asking:
                self._offer(d, ready)
        return live

    def _members(self, cohort: Cohort) -> list[dict[str, Any]]:
        device_class, budget, tasks = cohort
        return [
            d
            for d in self.registry.devices.all()
            if d["device_class"] == device_class
            and d["budget"] == budget
            and tuple(sorted(d["needs_tasks"])) == tasks
        ]

    def _offer(self, device_id: str, ready: Ready) -> None:
        if self.offerer is None:
            return
        dev = self.registry.devices.get(device_id) or {}
        self.offerer.offer(device_id, int(dev.get("needs_seq", 0)), ready, held=True)

    # -- watching and deciding -----------------------------------------------------------------

    def __call__(self, e: FleetEvent) -> None:
        if e.kind not in ("swap", "telemetry"):
            return
        with self._lock:
            for live in list(self._live.values()):
                self._watch(live, e)
            self.evaluate()

    def _watch(self, live: _Live, e: FleetEvent) -> None:
        d, candidate = e.data, live.row["candidate_artifact"]
        watch = live.watches.get(e.device_id)
        if e.kind == "swap" and watch is not None and d.get("artifact_id") == candidate:
            if d.get("ok"):
                watch.swapped_at, watch.first, watch.last = e.at, None, None
            else:
                watch.refused = str(d.get("reason") or "refused")
        elif e.kind == "telemetry":
            artifact = d.get("artifact_id")
            counts = int(d.get("inference_count", 0)), int(d.get("failed_count", 0))
            p95 = float(d.get("latency_p95_ms", 0.0))
            if watch is not None and artifact == candidate:
                if watch.swapped_at is None:  # swapped before a restart of the server: count from now
                    watch.swapped_at = e.at
                watch.observe(*counts, p95)
            elif (
                watch is None
                and e.device_id in live.row["cohort"]
                and artifact == live.row["baseline_artifact"]
            ):
                live.control[e.device_id] = p95

    def evaluate(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            for live in list(self._live.values()):
                base = baseline_p95(live.control, live.row["baseline_p95_ms"])
                verdict = judge_canaries(live.watches, base, live.row["created"], now, self.settings)
                if verdict is not None:
                    self._decide(live, PROMOTED if verdict.ok else ROLLED_BACK, verdict.reason)

    def _decide(self, live: _Live, state: str, reason: str, offer: bool = True) -> None:
        row = live.row
        self._live.pop(row["id"], None)
        row.update(state=state, reason=reason, decided=time.time())
        self.registry.rollouts.decide(row["id"], state, reason, row["decided"])
        log = logger.info if state == PROMOTED else logger.warning
        log("rollout %s %s: %s", row["id"], state, reason)
        self._event(row)
        if not offer:
            return
        if state == PROMOTED:
            key = row["candidate_build_key"]
            try:
                candidate = Ready(key, self.store.get(row["candidate_artifact"]))
                best = self.lineage.best(key)
                ready = self.lineage.like(best, candidate) if best else candidate
            except EdgecutError:
                logger.error("rollout %s: the promoted artifact is gone from the store", row["id"])
                return
            refined = ready.artifact.artifact_id != row["candidate_artifact"]
            for d in self._members(live.cohort):
                canary = d["device_id"] in row["canaries"]
                if (refined or not canary) and d["artifact_id"] != ready.artifact.artifact_id:
                    self._offer(d["device_id"], ready)
            if best is not None and best.artifact.artifact_id != ready.artifact.artifact_id:
                # a refinement of another architecture (from scratch) came while this one was judged:
                # what the canaries measured says nothing about it, so it gets its own rollout
                self._begin(live.cohort, ready.artifact.artifact_id, best, "")
        elif state == ROLLED_BACK:
            baseline = self.lineage.baseline_ready(row)
            if baseline is None:
                return
            for d in row["canaries"]:
                self._offer(d, baseline)
                self._event(row, rolled_back_device=d)

    def _event(self, row: dict[str, Any], announce: bool = False, **extra: Any) -> None:
        data = {
            "id": row["id"],
            "state": row["state"],
            "device_class": row["device_class"],
            "candidate": row["candidate_artifact"],
            "baseline": row["baseline_artifact"],
            "reason": row["reason"],
            "started": announce,
            **extra,
        }
        self.observers.emit(FleetEvent("rollout", extra.get("rolled_back_device", ""), data))
