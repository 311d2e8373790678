"""Progressive delivery in the job queue: refinements after the quick build, persisted, quick builds first."""

from __future__ import annotations

import threading
from pathlib import Path

from edgecut.server.fleet.events import Observers
from edgecut.server.fleet.jobs.leases import Leases
from edgecut.server.fleet.jobs.manager import JobManager
from edgecut.server.fleet.jobs.outcomes import Ready
from edgecut.server.fleet.jobs.refiner import NOT_BETTER, STALE, UNWANTED, Refiner
from edgecut.server.fleet.state.job_record import refinement_key
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.schema import DONE, QUEUED, REFINE
from edgecut.server.fleet.state.store import LocalStore
from edgecut.server.spec import Budget, BuildSpec, spec_to_dict
from tests.support.onnx_engine import OnnxTestEngine
from tests.support.waiting import wait_until


class Stack:
    def __init__(
        self, root: Path, engine: OnnxTestEngine, owner: str = "replica-a", refine_workers: int = 1
    ) -> None:
        self.engine = engine
        self.registry = Registry(f"sqlite:///{root / 'registry.sqlite3'}")
        self.store = LocalStore(root / "artifacts")
        self.jobs = JobManager(
            engine, self.store, self.registry, owner=owner, poll_s=0.05, refine_workers=refine_workers
        )
        self.refined: list[Ready] = []
        self.jobs.add_refined_hook(self.refined.append)
        self.jobs.start()

    def close(self) -> None:
        self.jobs.stop()
        self.registry.close()


def spec(*tasks: str, macs: float = 0.5) -> BuildSpec:
    return BuildSpec.create(list(tasks), Budget(macs_fraction=macs))


def quick(stack: Stack, s: BuildSpec) -> Ready:
    got: list[Ready] = []
    done = threading.Event()

    def listener(e: object) -> None:
        if isinstance(e, Ready):
            got.append(e)
            done.set()

    sub = stack.jobs.submit(s, listener)
    assert done.wait(30) or sub.ready is not None
    return got[0] if got else sub.ready  # type: ignore[return-value]


def test_refinements_follow_the_quick_build_and_the_cache_serves_the_best(tmp_path: Path) -> None:
    st = Stack(tmp_path, OnnxTestEngine(tmp_path / "work", refinements=2))
    try:
        s = spec("seg", "depth")
        first = quick(st, s)
        assert first.refinement == 0 and first.parent_artifact_id == ""
        wait_until(lambda: len(st.refined) == 2)
        r1, r2 = st.refined
        assert (r1.refinement, r1.parent_artifact_id) == (1, first.artifact.artifact_id)
        assert (r2.refinement, r2.parent_artifact_id) == (2, r1.artifact.artifact_id)
        assert len({first.artifact.artifact_id, r1.artifact.artifact_id, r2.artifact.artifact_id}) == 3
        # better made-up metrics at each step (seg: higher miou is better)
        mious = [r.artifact.meta.metrics["seg"]["miou"] for r in (first, r1, r2)]
        assert mious == sorted(mious) and len(set(mious)) == 3
        key = st.jobs.build_key(s)
        rec = st.registry.jobs.get(key)
        assert rec is not None and (rec.artifact_id, rec.refinement) == (r2.artifact.artifact_id, 2)
        assert rec.parent_artifact_id == r1.artifact.artifact_id
        hit = st.jobs.submit(s).ready  # a device asking now gets the best version at once
        assert hit is not None and hit.cache_hit and hit.artifact.artifact_id == r2.artifact.artifact_id
        assert hit.refinement == 2
        assert len(st.engine.builds) == 1 and len(st.engine.refines) == 2  # no third refinement
    finally:
        st.close()


def test_a_refinement_that_is_not_better_is_recorded_and_the_next_starts_from_the_same_parent(
    tmp_path: Path,
) -> None:
    st = Stack(tmp_path, OnnxTestEngine(tmp_path / "work", refinements=3, not_better={1, 3}))
    try:
        s = spec("seg")
        first = quick(st, s)
        key = st.jobs.build_key(s)
        rec = wait_until(
            lambda: (r := st.registry.jobs.get(refinement_key(key, 1))) and r.state == DONE and r
        )
        assert rec.stage == NOT_BETTER and rec.artifact_id == ""
        # refinement 2 (a longer schedule, or the from-scratch candidate) still gets its chance
        wait_until(lambda: len(st.refined) == 1)
        (r2,) = st.refined
        assert (r2.refinement, r2.parent_artifact_id) == (2, first.artifact.artifact_id)
        last = wait_until(
            lambda: (r := st.registry.jobs.get(refinement_key(key, 3))) and r.state == DONE and r
        )
        assert last.stage == NOT_BETTER
        served = st.registry.jobs.get(key)
        assert served is not None and served.artifact_id == r2.artifact.artifact_id
        assert len(st.engine.refines) == 3 and len(st.refined) == 1  # nothing after the last one
    finally:
        st.close()


def test_quick_builds_go_first_and_a_running_refinement_yields(tmp_path: Path) -> None:
    engine = OnnxTestEngine(tmp_path / "work", refinements=1, delay=0.4)
    st = Stack(tmp_path, engine)
    try:
        seg_key = refinement_key(st.jobs.build_key(spec("seg")), 1)
        with engine.hold_refinements():
            quick(st, spec("seg"))
            wait_until(lambda: engine.refines)  # refinement 1 of seg runs (held before it exports)
            second = quick(st, spec("depth"))  # a device's first model: delivered although seg refines
            assert second.refinement == 0
        wait_until(lambda: len(st.refined) == 2)
        rec = st.registry.jobs.get(seg_key)
        assert rec is not None and rec.attempts >= 2  # it yielded to the depth build and ran again
        assert {r.build_key for r in st.refined} == {
            st.jobs.build_key(spec("seg")),
            st.jobs.build_key(spec("depth")),
        }
    finally:
        st.close()


def test_a_restart_resumes_a_queued_refinement(tmp_path: Path) -> None:
    engine = OnnxTestEngine(tmp_path / "work", refinements=1)
    st = Stack(tmp_path, engine)
    s = spec("seg", "edges")
    with engine.hold_refinements():  # the refinement cannot finish before the stop
        first = quick(st, s)
        wait_until(lambda: engine.refines)
        st.close()  # interrupts it: queued again in the registry
    key = st.jobs.build_key(s)
    reg = Registry(f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    rec = reg.jobs.get(refinement_key(key, 1))
    assert rec is not None and rec.state == QUEUED and rec.kind == REFINE
    reg.close()
    st2 = Stack(tmp_path, engine)
    try:
        wait_until(lambda: st2.refined)
        assert st2.refined[0].parent_artifact_id == first.artifact.artifact_id
        assert st2.jobs.submit(s).ready.refinement == 1  # type: ignore[union-attr]
    finally:
        st2.close()


def test_a_refinement_of_a_replaced_artifact_is_not_served(tmp_path: Path) -> None:
    engine = OnnxTestEngine(tmp_path / "work", refinements=1)
    st = Stack(tmp_path, engine)
    try:
        s = spec("normals")
        key = st.jobs.build_key(s)
        with engine.hold_refinements():
            quick(st, s)
            wait_until(lambda: engine.refines)
            # meanwhile the key's job moved to another artifact (e.g. rebuilt after a scrub)
            st.registry.jobs.update(key, artifact_id="f" * 64)
        rec = wait_until(
            lambda: (r := st.registry.jobs.get(refinement_key(key, 1))) and r.state == DONE and r
        )
        assert rec.stage == STALE
        served = st.registry.jobs.get(key)
        assert served is not None and served.artifact_id == "f" * 64 and served.refinement == 0
        assert st.refined == []
    finally:
        st.close()


def test_a_refinement_nobody_wants_any_more_is_skipped_until_a_device_asks_again(tmp_path: Path) -> None:
    """A device got the quick model, then changed its tasks before the refinement started: the CPU is
    not spent on it; a device asking for that key again brings the refinement back."""
    engine = OnnxTestEngine(tmp_path / "work", refinements=1)
    st = Stack(tmp_path, engine, refine_workers=0)  # nobody refines until the device has moved on
    refiner: JobManager | None = None
    try:
        s, other = spec("seg", "depth"), spec("normals")
        key = st.jobs.build_key(s)
        first = quick(st, s)
        st.registry.devices.record_needs("pi", ["seg", "depth"], 1, {}, {}, "rpi4", s.budget.bucket())
        st.registry.offers.record("pi", key, first.artifact.artifact_id, 1)
        # the user switches to normals; its own build is offered
        st.registry.devices.record_needs("pi", ["normals"], 2, {}, {}, "rpi4", other.budget.bucket())
        st.registry.offers.record("pi", st.jobs.build_key(other), "a" * 64, 2)
        refiner = JobManager(engine, st.store, st.registry, owner="replica-b", poll_s=0.05)
        refiner.start()
        rec = wait_until(
            lambda: (r := st.registry.jobs.get(refinement_key(key, 1))) and r.state == DONE and r
        )
        assert rec.stage == UNWANTED and engine.refines == [] and st.refined == []

        # another device asks for seg + depth (needs recorded, then the cache answers, as the bridge does)
        st.registry.devices.record_needs("pi-2", ["seg", "depth"], 1, {}, {}, "rpi4", s.budget.bucket())
        hit = st.jobs.submit(s).ready
        assert hit is not None and hit.cache_hit and hit.refinement == 0
        wait_until(lambda: len(engine.refines) == 1)  # ... and the refinement runs after all
        rec = wait_until(
            lambda: (r := st.registry.jobs.get(refinement_key(key, 1))) and r.state == DONE and r
        )
        assert rec.stage == "ready" and rec.artifact_id != ""
    finally:
        if refiner is not None:
            refiner.stop()
        st.close()


def test_a_cache_hit_revives_the_refinement_after_one_that_was_not_better(tmp_path: Path) -> None:
    st = Stack(tmp_path, OnnxTestEngine(tmp_path / "work", refinements=2), refine_workers=0)
    try:
        key = "k" * 32
        # refinement 1 was not better, so 2 was queued from the same parent and then skipped as unwanted
        for n, stage in ((1, NOT_BETTER), (2, UNWANTED)):
            st.registry.jobs.create(refinement_key(key, n), {"refine": {"of": key}}, kind=REFINE)
            st.registry.jobs.update(refinement_key(key, n), state=DONE, stage=stage)
        st.jobs.refiner.revive(key, 0)  # the key still serves its quick model (refinement 0)
        again = st.registry.jobs.get(refinement_key(key, 2))
        assert again is not None and again.state == QUEUED
        first = st.registry.jobs.get(refinement_key(key, 1))
        assert first is not None and first.stage == NOT_BETTER  # a not-better step is not re-run
    finally:
        st.close()


def test_the_refiner_is_a_peer_built_from_the_engine_store_registry_and_leases(tmp_path: Path) -> None:
    """No job manager: the refiner refines a done build of the registry once nothing quick waits."""
    engine = OnnxTestEngine(tmp_path / "work", refinements=1)
    registry = Registry(f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    store = LocalStore(tmp_path / "artifacts")
    s = spec("seg")
    key = s.build_key(engine.base_model_id)
    built = engine.build(s, lambda *_: None)
    try:
        parent = store.put_file(built.onnx_path, built.meta.model_copy(update={"build_key": key}))
    finally:
        built.cleanup()
    registry.jobs.create(key, spec_to_dict(s))
    registry.jobs.update(key, state=DONE, stage="ready", fraction=1.0, artifact_id=parent.artifact_id)
    quick_waiting, refined = threading.Event(), list[Ready]()
    quick_waiting.set()
    leases = Leases("replica-a", poll_s=0.05)
    refiner = Refiner(engine, store, registry, leases, Observers(), quick_waiting.is_set, refined.append)
    worker = threading.Thread(target=refiner.work, daemon=True)
    try:
        assert refiner.queue(key, s, parent.artifact_id, 1)
        worker.start()
        queued = registry.jobs.get(refinement_key(key, 1))
        assert queued is not None and queued.state == QUEUED and engine.refines == []
        quick_waiting.clear()  # the quick build is answered: refinements may run
        wait_until(lambda: len(refined) == 1)
        (r1,) = refined
        assert (r1.build_key, r1.refinement, r1.parent_artifact_id) == (key, 1, parent.artifact_id)
        served = registry.jobs.get(key)
        assert served is not None and served.artifact_id == r1.artifact.artifact_id
    finally:
        leases.stop_event.set()
        refiner.wake.set()
        worker.join(10)
        registry.close()
