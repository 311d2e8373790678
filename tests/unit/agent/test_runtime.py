from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from edgecut.agent.artifacts import ModelStore
from edgecut.agent.errors import BadInput, ModelRejected, NoModelError
from edgecut.agent.runtime import Runtime, load_model
from tests.support.agent_helpers import put
from tests.support.onnx_models import build_model, corrupted

IMG = np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path)


def test_load_validates_and_runs(store: ModelStore) -> None:
    aid = put(store, build_model(["seg", "depth", "count"]))
    m = load_model(store.path(aid), aid, threads=1)
    assert m.meta.tasks == ["seg", "depth", "count"]
    outs = m.run(np.repeat(IMG, 3, axis=0))
    assert outs["seg"].shape == (3, 4, 64, 64) and outs["count"].shape == (3, 3)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (build_model(["seg"], fault="nan"), "not finite"),
        (build_model(["seg", "depth"], fault="shape"), "metadata says"),
        (corrupted(build_model(["seg"])), "cannot load"),
    ],
    ids=["nan", "shape", "corrupted"],
)
def test_faulty_models_are_refused_and_old_keeps_serving(store: ModelStore, data: bytes, reason: str) -> None:
    rt = Runtime(store, threads=1)
    good = put(store, build_model(["seg"]))
    assert rt.install(good).ok
    bad = put(store, data)
    result = rt.install(bad)
    assert not result.ok and reason in result.reason
    assert result.previous_artifact_id == good
    model, outs, _ = rt.infer(IMG)
    assert model.artifact_id == good and np.isfinite(outs["seg"]).all()
    assert bad in store.bad and not store.has(bad)  # remembered, file dropped
    assert store.current == good
    assert rt.stats.failed_swaps == 1
    with pytest.raises(ModelRejected):
        load_model(store.path(put(store, data)), "x" * 64)


def test_infer_errors(store: ModelStore) -> None:
    rt = Runtime(store, threads=1)
    with pytest.raises(NoModelError):
        rt.infer(IMG)
    assert rt.install(put(store, build_model(["seg"]))).ok
    with pytest.raises(BadInput):
        rt.infer(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(BadInput):
        rt.infer(IMG.astype(np.float64))


def test_swap_under_load_drops_no_request_and_rollback_returns(store: ModelStore) -> None:
    """Readers hammer the slot while the model is swapped back and forth; none may fail."""
    rt = Runtime(store, threads=1)
    a = put(store, build_model(["seg", "depth"], seed=1))
    assert rt.install(a).ok
    b = put(store, build_model(["seg", "depth"], seed=2))  # after: a swap prunes unknown files
    stop = threading.Event()
    seen: set[str] = set()
    errors: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                model, outs, _ = rt.infer(IMG)
                assert set(outs) == {"seg", "depth"}
                seen.add(model.artifact_id)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        assert rt.install(b).ok
        for _ in range(6):
            assert rt.rollback().ok
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert errors == []
    assert seen == {a, b}
    assert rt.slot.current is not None and rt.slot.current.artifact_id == b  # b, then 6 rollbacks
    assert (store.current, store.previous) == (b, a)
    assert rt.stats.swaps == 8


def test_rollback_without_previous_fails_cleanly(store: ModelStore) -> None:
    rt = Runtime(store, threads=1)
    assert rt.install(put(store, build_model(["seg"]))).ok
    result = rt.rollback()
    assert not result.ok and "no previous" in result.reason


def test_restore_skips_a_damaged_current_model(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    rt = Runtime(store, threads=1)
    a = put(store, build_model(["seg"], seed=1))
    assert rt.install(a).ok
    b = put(store, build_model(["seg"], seed=2))
    assert rt.install(b).ok
    data = bytearray(store.path(b).read_bytes())
    data[-10] ^= 0xFF  # bit rot on disk
    store.path(b).write_bytes(bytes(data))
    fresh = Runtime(ModelStore(tmp_path), threads=1)
    result = fresh.restore()
    assert result is not None and result.ok and result.artifact_id == a
    assert fresh.store.current == a and not fresh.store.has(b)


def test_older_models_are_pruned(store: ModelStore) -> None:
    rt = Runtime(store, threads=1)
    ids = []
    for seed in range(3):
        ids.append(put(store, build_model(["seg"], seed=seed)))
        assert rt.install(ids[-1]).ok
    store.part_path("f" * 64).write_bytes(b"stale")
    assert rt.install(put(store, build_model(["seg"], seed=9))).ok
    left = sorted(p.name for p in store.dir.iterdir() if p.suffix in (".onnx", ".part"))
    assert len(left) == 2 and f"{ids[2]}.onnx" in left
