"""The quick model's quality floor in the job queue: a model below it goes out `held` while a refinement
may still replace it; the first one above it, or the key's last model, goes out as usual."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecut.server.fleet.jobs.manager import JobManager
from edgecut.server.fleet.jobs.outcomes import Outcome, Ready
from edgecut.server.fleet.jobs.quality_floor import model_delta_m
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.store import LocalStore
from edgecut.server.spec import Budget, BuildSpec
from tests.support.onnx_engine import OnnxTestEngine
from tests.support.waiting import wait_until

SEG = BuildSpec.create(["seg"], Budget(macs_fraction=0.5))
WHY = "quick model -70.0 % below the -25 % floor; waiting for the refined model"


class Queue:
    """A job manager with the floor, recording what it tells the finish and refined hooks."""

    def __init__(self, root: Path, engine: OnnxTestEngine, floor: float = -25.0) -> None:
        self.engine = engine
        self.registry = Registry(f"sqlite:///{root / 'registry.sqlite3'}")
        self.jobs = JobManager(
            engine, LocalStore(root / "artifacts"), self.registry, poll_s=0.05, quick_floor=floor
        )
        self.finished: list[Outcome] = []
        self.refined: list[Ready] = []
        self.jobs.add_finish_hook(self.finished.append)
        self.jobs.add_refined_hook(self.refined.append)
        self.jobs.start()

    def close(self) -> None:
        self.jobs.stop()
        self.registry.close()


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[Queue]:
    q = Queue(tmp_path, OnnxTestEngine(tmp_path / "work", faults={("seg",): "low_quality"}, refinements=2))
    yield q
    q.close()


def test_a_quick_model_below_the_floor_is_held_until_a_refinement_passes(queue: Queue) -> None:
    with queue.engine.hold_refinements():
        queue.jobs.submit(SEG)
        (quick,) = wait_until(lambda: queue.finished)
        assert isinstance(quick, Ready) and quick.held == WHY
        assert model_delta_m(quick.artifact.meta) == pytest.approx(-70.0)
        hit = queue.jobs.submit(SEG).ready  # asked again meanwhile: still held
        assert hit is not None and hit.cache_hit and hit.held == WHY
    r1, r2 = wait_until(lambda: len(queue.refined) == 2 and queue.refined)
    assert r1.held.startswith("refinement 1 -35.0 % below the -25 % floor")  # refinement 2 may pass
    assert r2.held == "" and model_delta_m(r2.artifact.meta) == pytest.approx(-17.5)
    served = queue.jobs.submit(SEG).ready
    assert served is not None and served.refinement == 2 and not served.held


def test_with_no_refinement_left_the_keys_model_goes_out(tmp_path: Path) -> None:
    engine = OnnxTestEngine(
        tmp_path / "work", faults={("seg",): "low_quality"}, refinements=1, not_better={1}
    )
    q = Queue(tmp_path, engine)
    try:
        q.jobs.submit(SEG)
        # held first; once refinement 1 is not better, the same model goes to whoever still waits
        first, settled = wait_until(lambda: len(q.finished) == 2 and q.finished)
        assert isinstance(first, Ready) and first.held == WHY
        assert isinstance(settled, Ready) and settled.held == ""
        assert settled.artifact.artifact_id == first.artifact.artifact_id
    finally:
        q.close()


@pytest.mark.parametrize(
    ("fault", "floor", "refinements"),
    [("low_quality", -25.0, 0), ("low_quality", -math.inf, 2), (None, -25.0, 2)],
    ids=["no refinement to come", "floor off", "above the floor"],
)
def test_nothing_is_held_without_a_refinement_to_come_with_the_floor_off_or_above_it(
    tmp_path: Path, fault: str | None, floor: float, refinements: int
) -> None:
    faults = {("seg",): fault} if fault else {}
    q = Queue(tmp_path, OnnxTestEngine(tmp_path / "work", faults=faults, refinements=refinements), floor)
    try:
        q.jobs.submit(SEG)
        (quick,) = wait_until(lambda: q.finished[:1])
        assert isinstance(quick, Ready) and quick.held == ""
    finally:
        q.close()
