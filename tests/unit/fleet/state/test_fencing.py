"""Fenced leases and the crash cap, on SQLite and on a real PostgreSQL server.

Two `Registry` objects on one database stand for two replicas. A lease of -1 s has run out as soon as
it is taken: its holder stands for a replica that stalled (SIGSTOP, a frozen VM) past its lease.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from edgecut.server.fleet.jobs.manager import JobManager
from edgecut.server.fleet.jobs.outcomes import Failed, Outcome
from edgecut.server.fleet.state.job_record import refinement_key
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.schema import DONE, FAILED, QUEUED, REFINE, RUNNING, LeaseRow
from edgecut.server.fleet.state.store import LocalStore
from edgecut.server.spec import Budget, BuildSpec, spec_to_dict
from tests.support.onnx_engine import OnnxTestEngine
from tests.support.waiting import wait_until

RAN_OUT = -1.0  # seconds: a lease that has expired the moment it is taken


def test_a_stalled_holder_cannot_record_a_job_another_replica_took_over(
    pair: tuple[Registry, Registry],
) -> None:
    a, b = pair
    a.jobs.ensure("k", {"tasks": ["seg"]})
    stalled = a.jobs.claim("replica-a", RAN_OUT)
    assert stalled is not None
    taken = b.jobs.claim("replica-b", 30)
    assert taken is not None and taken.generation > stalled.generation
    # replica a wakes up: neither its progress nor its result counts, and b's lease stays
    assert not a.jobs.update("k", stalled.generation, stage="exporting", fraction=0.9)
    assert not a.jobs.finish("k", "replica-a", stalled.generation, state=DONE, artifact_id="a" * 64)
    now = b.jobs.get("k")
    assert now is not None and (now.state, now.owner, now.artifact_id, now.stage) == (
        RUNNING,
        "replica-b",
        "",
        "running",
    )
    assert b.jobs.finish("k", "replica-b", taken.generation, state=DONE, artifact_id="b" * 64)
    # nor after b finished: a late result never replaces the recorded one
    assert not a.jobs.finish("k", "replica-a", stalled.generation, state=FAILED, error_message="late")
    done = a.jobs.get("k")
    assert done is not None and (done.state, done.artifact_id, done.owner) == (DONE, "b" * 64, "")


def test_the_generation_decides_not_the_replica_name(pair: tuple[Registry, Registry]) -> None:
    a, _ = pair
    a.jobs.ensure("k", {})
    before = a.jobs.claim("replica-a", 30)
    assert before is not None
    assert a.jobs.release_leases("replica-a") == ["k"]  # restarted under the same id, before a thread woke up
    again = a.jobs.claim("replica-a", 30)
    assert again is not None
    assert not a.jobs.finish("k", "replica-a", before.generation, state=DONE, artifact_id="a" * 64)
    assert a.jobs.finish("k", "replica-a", again.generation, state=DONE, artifact_id="c" * 64)
    rec = a.jobs.get("k")
    assert rec is not None and rec.artifact_id == "c" * 64


def test_a_stalled_refinement_is_not_adopted(pair: tuple[Registry, Registry]) -> None:
    a, b = pair
    a.jobs.ensure("k", {})
    quick = a.jobs.claim("replica-a", 30)
    assert quick is not None
    assert a.jobs.finish("k", "replica-a", quick.generation, state=DONE, artifact_id="p" * 64)
    rk = refinement_key("k", 1)
    a.jobs.create(rk, {"refine": {"of": "k", "parent": "p" * 64, "number": 1}}, kind=REFINE)
    stalled = a.jobs.claim("replica-a", RAN_OUT, kind=REFINE)
    taken = b.jobs.claim("replica-b", 30, kind=REFINE)
    assert stalled is not None and taken is not None
    assert a.jobs.finish_refinement(rk, "replica-a", stalled.generation, "k", "p" * 64, "s" * 64, 1) is None
    served = a.jobs.get("k")
    assert served is not None and served.artifact_id == "p" * 64  # the stalled one's artifact is not served
    assert b.jobs.finish_refinement(rk, "replica-b", taken.generation, "k", "p" * 64, "r" * 64, 1) == "ready"
    served = a.jobs.get("k")
    assert served is not None and (served.artifact_id, served.refinement) == ("r" * 64, 1)


def test_a_job_whose_holders_keep_dying_ends_failed_after_the_cap(pair: tuple[Registry, Registry]) -> None:
    a, b = pair
    a.jobs.ensure("k", {"tasks": ["seg"]})
    first = a.jobs.claim("replica-a", RAN_OUT, max_crashes=3)  # then replica a dies
    second = b.jobs.claim("replica-b", RAN_OUT, max_crashes=3)  # b takes over, and dies too
    assert first is not None and second is not None and second.crashes == 1
    third = a.jobs.claim("replica-a", 30, max_crashes=3)  # a restarted
    assert third is not None and third.state == RUNNING and third.crashes == 2
    assert a.jobs.release_leases("replica-a") == ["k"]  # a dies a third time, holding it, and restarts
    ended = a.jobs.claim("replica-a", 30, max_crashes=3)
    assert ended is not None and ended.state == FAILED and ended.crashes == 3
    assert ended.error_code == "BUILD_FAILED" and "3 times" in ended.error_message
    assert b.jobs.claim("replica-b", 30, max_crashes=3) is None  # nobody builds it again
    rec = b.jobs.get("k")
    assert rec is not None and rec.state == FAILED and rec.owner == ""
    # the last holder waking up cannot turn it into a success
    assert not a.jobs.finish("k", "replica-a", third.generation, state=DONE, artifact_id="a" * 64)
    # a device asking again is a new request: queued, with a new allowance
    again = a.jobs.ensure("k", {"tasks": ["seg"]})
    assert again.state == QUEUED and again.crashes == 0


def test_graceful_stops_are_not_crashes(pair: tuple[Registry, Registry]) -> None:
    a, b = pair
    a.jobs.ensure("k", {})
    for _ in range(5):  # five rolling restarts mid-build
        got = a.jobs.claim("replica-a", 30, max_crashes=2)
        assert got is not None and got.state == RUNNING and got.crashes == 0
        a.jobs.release("k", "replica-a")
    got = b.jobs.claim("replica-b", 30, max_crashes=2)
    assert got is not None and got.state == RUNNING


def test_no_cap_retries_forever(pair: tuple[Registry, Registry]) -> None:
    a, b = pair
    a.jobs.ensure("k", {})
    for i in range(5):
        got = (a, b)[i % 2].jobs.claim(f"replica-{i}", RAN_OUT)  # max_crashes=0: no cap
        assert got is not None and got.state == RUNNING and got.crashes == i


# -- the job manager on top (SQLite) ----------------------------------------------------------------


def _manager(root: Path, engine: OnnxTestEngine, registry: Registry) -> tuple[JobManager, list[Outcome]]:
    # a watcher that never looks during the test (poll 600 s): the lease changes hands only as the test says
    jobs = JobManager(
        engine, LocalStore(root / "artifacts"), registry, owner="replica-a", poll_s=600, lease_s=1800
    )
    finished: list[Outcome] = []
    jobs.add_finish_hook(finished.append)
    return jobs, finished


def test_a_replica_that_stalled_drops_its_result_and_tells_nobody(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry, other = (Registry(f"sqlite:///{tmp_path / 'r.sqlite3'}") for _ in range(2))
    engine = OnnxTestEngine(tmp_path / "work")
    jobs, finished = _manager(tmp_path, engine, registry)
    spec = BuildSpec.create(["seg"], Budget(macs_fraction=0.5))
    key = jobs.build_key(spec)
    try:
        with engine.hold():  # the build stops before it exports: replica a "stalls" there
            jobs.start()
            registry.jobs.ensure(key, spec_to_dict(spec))
            jobs._wake.set()
            held = wait_until(
                lambda: (j := registry.jobs.get(key)) is not None and j.stage == "exporting" and j
            )
            with other.transaction() as s:  # its lease ran out meanwhile; replica b takes the job over
                s.execute(update(LeaseRow).values(expires=0.0).execution_options(synchronize_session=False))
            taken = other.jobs.claim("replica-b", 30)
            assert taken is not None and taken.generation > held.generation
            assert other.jobs.finish(key, "replica-b", taken.generation, state=DONE, artifact_id="b" * 64)
        # replica a wakes up and finishes its build
        wait_until(lambda: "lost its lease before it finished" in caplog.text)
        rec = registry.jobs.get(key)
        assert rec is not None and (rec.state, rec.artifact_id) == (DONE, "b" * 64)
        assert finished == []  # its hooks (the MQTT answers) were not run with its result
    finally:
        jobs.stop()
        registry.close()
        other.close()


def test_the_crash_cap_fails_the_job_and_tells_its_waiters(tmp_path: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path / 'r.sqlite3'}")
    engine = OnnxTestEngine(tmp_path / "work")
    jobs, finished = _manager(tmp_path, engine, registry)
    spec = BuildSpec.create(["seg"], Budget(macs_fraction=0.5))
    key = jobs.build_key(spec)
    registry.jobs.ensure(key, spec_to_dict(spec))
    registry.waiters.add(key, "dev-1", 7)
    for dead in ("dead-1", "dead-2", "dead-3"):  # three replicas died building it
        assert registry.jobs.claim(dead, RAN_OUT) is not None
    try:
        jobs.start()
        wait_until(lambda: finished)
        assert engine.builds == []  # not built a fourth time
        assert isinstance(finished[0], Failed) and finished[0].code == "BUILD_FAILED"
        assert "stopped its server 3 times" in finished[0].message
        assert [w.device_id for w in registry.waiters.take(key)] == ["dev-1"]  # the hook's devices
    finally:
        jobs.stop()
        registry.close()
