from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgecut.model_meta import ONNX_METADATA_KEY, ModelMeta
from edgecut.server.errors import ImpossibleBudgetError, UnknownTaskError
from edgecut.server.fleet.jobs.manager import JobManager
from edgecut.server.fleet.jobs.outcomes import Event, Failed, Outcome, Progress, Ready
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.schema import DONE, FAILED, QUEUED, RUNNING
from edgecut.server.fleet.state.store import LocalStore
from edgecut.server.fleet.state.waiters import Waiter
from edgecut.server.spec import Budget, BuildSpec
from tests.support.onnx_engine import OnnxTestEngine
from tests.support.waiting import wait_until


class Stack:
    def __init__(self, root: Path, engine: OnnxTestEngine, workers: int = 1) -> None:
        self.root, self.engine = root, engine
        self.registry = Registry(f"sqlite:///{root / 'registry.sqlite3'}")
        self.store = LocalStore(root / "artifacts")
        self.jobs = JobManager(engine, self.store, self.registry, workers)
        self.finished: list[Outcome] = []
        self.jobs.add_finish_hook(self.finished.append)
        self.jobs.start()

    def close(self) -> None:
        self.jobs.stop()
        self.registry.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path, OnnxTestEngine(tmp_path / "work", delay=0.3))
    yield s
    s.close()


def spec(*tasks: str, macs: float = 0.5) -> BuildSpec:
    return BuildSpec.create(list(tasks), Budget(macs_fraction=macs))


class Collector:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.done = threading.Event()

    def __call__(self, e: Event) -> None:
        self.events.append(e)
        if isinstance(e, Ready | Failed):
            self.done.set()


def test_identical_concurrent_requests_share_one_build(stack: Stack) -> None:
    collectors = [Collector() for _ in range(20)]
    threads = [threading.Thread(target=stack.jobs.submit, args=(spec("seg", "depth"), c)) for c in collectors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for c in collectors:
        assert c.done.wait(10)
    assert len(stack.engine.builds) == 1
    ids = {c.events[-1].artifact.artifact_id for c in collectors}  # type: ignore[union-attr]
    assert len(ids) == 1
    assert all(not c.events[-1].cache_hit for c in collectors)  # type: ignore[union-attr]


def test_progress_is_ordered_and_artifact_is_a_loadable_model(stack: Stack) -> None:
    c = Collector()
    stack.jobs.submit(spec("seg", "count"), c)
    assert c.done.wait(10)
    stages = [e.stage for e in c.events if isinstance(e, Progress)]
    assert stages[0] == "queued" and stages[-1] == "exporting"
    assert {"importance", "pruning", "recovery"} <= set(stages)
    fractions = [e.fraction for e in c.events if isinstance(e, Progress)]
    assert fractions == sorted(fractions)
    ready = c.events[-1]
    assert isinstance(ready, Ready)
    path = stack.store.root / ready.artifact.artifact_id[:2] / f"{ready.artifact.artifact_id}.onnx"
    meta = ModelMeta.from_json(
        {p.key: p.value for p in onnx.load(str(path)).metadata_props}[ONNX_METADATA_KEY]
    )
    assert meta.tasks == ["count", "seg"] and meta.build_key == ready.build_key
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"image": np.zeros((2, 3, 64, 64), np.float32)})
    assert [o.shape for o in outs] == [(2, 10), (2, 5, 64, 64)]
    job = stack.registry.jobs.get(ready.build_key)
    assert job is not None and job.state == DONE and job.artifact_id == ready.artifact.artifact_id
    assert stack.finished == [ready]


def test_a_built_key_is_a_cache_hit(stack: Stack) -> None:
    c = Collector()
    stack.jobs.submit(spec("edges"), c)
    assert c.done.wait(10)
    hit = Collector()
    sub = stack.jobs.submit(spec("edges", macs=0.51), hit)  # same budget bucket
    assert sub.ready is not None and sub.ready.cache_hit and sub.job is None
    assert hit.events == [sub.ready]
    assert len(stack.engine.builds) == 1


def test_bad_requests_fail_before_queueing(stack: Stack) -> None:
    with pytest.raises(UnknownTaskError, match="unknown task 'sky': this model knows seg, depth"):
        stack.jobs.submit(spec("seg", "sky"))
    with pytest.raises(ImpossibleBudgetError, match="below the smallest model"):
        stack.jobs.submit(BuildSpec.create(["seg"], Budget(max_macs=10)))
    assert stack.registry.jobs.all() == [] and stack.engine.builds == []


def test_a_failed_build_reaches_every_waiter_and_can_be_retried(tmp_path: Path) -> None:
    s = Stack(tmp_path, OnnxTestEngine(tmp_path / "w", delay=0.2, fail_tasks={"normals"}))
    try:
        a, b = Collector(), Collector()
        s.jobs.submit(spec("normals"), a)
        s.jobs.submit(spec("normals"), b)
        assert a.done.wait(10) and b.done.wait(10)
        for c in (a, b):
            last = c.events[-1]
            assert isinstance(last, Failed) and last.code == "BUILD_FAILED"
            assert "recovery diverged for normals" in last.message
        job = s.registry.jobs.get(s.jobs.build_key(spec("normals")))
        assert job is not None and job.state == FAILED and job.error_code == "BUILD_FAILED"
        s.engine.fail_tasks.clear()
        again = Collector()
        s.jobs.submit(spec("normals"), again)  # failures are not cached
        assert again.done.wait(10) and isinstance(again.events[-1], Ready)
        assert len(s.engine.builds) == 2
    finally:
        s.close()


def test_the_server_log_says_why_a_build_failed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 27: a failed build was on the device's status and /api/v1/builds, but not in the server log."""
    s = Stack(tmp_path, OnnxTestEngine(tmp_path / "w", delay=0.1, fail_tasks={"normals"}))
    try:
        c = Collector()
        with caplog.at_level(logging.WARNING, logger="edgecut.server.fleet.jobs.builder"):
            s.jobs.submit(spec("normals"), c)
            assert c.done.wait(10)
            wait_until(lambda: "failed" in caplog.text, 10)
        key = s.jobs.build_key(spec("normals"))[:12]
        [line] = [r for r in caplog.records if key in r.getMessage()]
        assert line.levelno == logging.WARNING
        assert "BUILD_FAILED" in line.getMessage() and "recovery diverged for normals" in line.getMessage()
    finally:
        s.close()


def test_queued_and_interrupted_jobs_resume_after_restart(tmp_path: Path) -> None:
    first = Stack(tmp_path, OnnxTestEngine(tmp_path / "w", delay=2.0))
    running = first.jobs.submit(spec("seg"), waiter=Waiter("dev-a", 5))
    queued = first.jobs.submit(spec("depth"), waiter=Waiter("dev-b", 9))
    wait_until(lambda: (j := first.registry.jobs.get(running.build_key)) and j.state == RUNNING)
    first.close()  # interrupts the running build at its next progress call
    states = {j.build_key: j.state for j in Registry(f"sqlite:///{tmp_path / 'registry.sqlite3'}").jobs.all()}
    assert states == {running.build_key: QUEUED, queued.build_key: QUEUED}  # handed back to any replica
    assert not first.finished

    second = Stack(tmp_path, OnnxTestEngine(tmp_path / "w", delay=0.1))
    try:
        wait_until(lambda: len(second.finished) == 2)
        assert {o.build_key for o in second.finished} == {running.build_key, queued.build_key}
        assert all(isinstance(o, Ready) for o in second.finished)
        assert {j.state for j in second.registry.jobs.all()} == {DONE}
        # the devices that asked before the restart are still on record, to be answered
        assert [(w.device_id, w.needs_seq) for w in second.registry.waiters.take(running.build_key)] == [
            ("dev-a", 5)
        ]
    finally:
        second.close()


def test_asking_again_for_the_model_offered_is_a_repeat_not_a_cache_hit(stack: Stack) -> None:
    c = Collector()
    stack.jobs.submit(spec("edges"), c, requester="pi-1")
    assert c.done.wait(10)
    (ready,) = [e for e in c.events if isinstance(e, Ready)]
    sources: list[str] = []
    stack.jobs.observers.add(
        lambda e: sources.append(str(e.data.get("source", ""))) if e.kind == "job" else None
    )
    stack.jobs.submit(spec("edges"), requester="pi-2")  # another device: one build saved
    stack.registry.offers.record("pi-1", ready.build_key, ready.artifact.artifact_id)
    stack.jobs.submit(spec("edges"), requester="pi-1")  # pi-1 again (an unpin, a restart)
    assert sources == ["cache", "repeat"]


def test_a_finished_build_reaches_the_hooks_once_when_the_watcher_sees_its_end_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the builder gives up its lease before it tells the hooks; the watcher, polling meanwhile, sees a
    # finished job it no longer holds and tells them too (a device was offered one model twice)
    registry = Registry(f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    jobs = JobManager(
        OnnxTestEngine(tmp_path / "work"), LocalStore(tmp_path / "artifacts"), registry, poll_s=0.02
    )
    finished: list[Outcome] = []
    jobs.add_finish_hook(finished.append)
    let_go = jobs.leases.let_go

    def slow_let_go(key: str) -> bool:
        released = let_go(key)
        threading.Event().wait(0.3)  # the watcher polls several times here
        return released

    monkeypatch.setattr(jobs.leases, "let_go", slow_let_go)
    jobs.start()
    try:
        jobs.submit(spec("seg"))
        wait_until(lambda: finished)
        threading.Event().wait(0.5)
        assert len(finished) == 1 and isinstance(finished[0], Ready)
    finally:
        jobs.stop()
        registry.close()
