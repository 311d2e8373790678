"""The torch engine behind the fleet service: validate fast, build an ONNX artifact with metadata."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from edgecut.server.engine import load_engine
from edgecut.server.errors import ImpossibleBudgetError, UnknownTaskError
from edgecut.server.mtl import checkpoint
from edgecut.server.spec import Budget, BuildSpec


@pytest.fixture(scope="module")
def engine(tmp_path_factory, trained_small):
    d = tmp_path_factory.mktemp("engine")
    ckpt = d / "model.pt"
    checkpoint.save(ckpt, trained_small)
    return load_engine(ckpt, d, n_calib=48, n_val=32, recovery_steps=5)


def test_validate_rejects_unknown_tasks_and_impossible_budgets(engine) -> None:
    with pytest.raises(UnknownTaskError, match="'sky'"):
        engine.validate(BuildSpec.create(["sky"], Budget(macs_fraction=0.5)))
    with pytest.raises(ImpossibleBudgetError, match="ask for at least"):
        engine.validate(BuildSpec.create(["seg"], Budget(max_params=5)))
    engine.validate(BuildSpec.create(["seg", "depth"], Budget(macs_fraction=0.5)))


def test_build_exports_a_verified_artifact_with_quality_figures(engine) -> None:
    stages: list[str] = []
    spec = BuildSpec.create(["depth", "seg"], Budget(macs_fraction=0.5))
    built = engine.build(spec, lambda stage, f, detail: stages.append(stage))
    meta = built.meta
    assert meta.tasks == ["depth", "seg"]
    assert meta.build_key == spec.build_key(engine.base_model_id)
    from edgecut.server.cut.prune import measure

    assert meta.macs <= 0.5 * measure(engine.base.select(["depth", "seg"]), 32).macs
    assert meta.onnx_max_abs_diff is not None and meta.onnx_max_abs_diff < 1e-4
    assert set(meta.metrics) == set(meta.reference_metrics) == {"depth", "seg"}
    assert {"importance", "pruning", "recovery", "exporting"} <= set(stages)
    sess = ort.InferenceSession(str(built.onnx_path), providers=["CPUExecutionProvider"])
    assert sorted(o.name for o in sess.get_outputs()) == ["depth", "seg"]
    assert Path(built.onnx_path).stat().st_size > 0


def test_build_scratch_is_removed_by_cleanup(engine) -> None:
    built = engine.build(
        BuildSpec.create(["count"], Budget(macs_fraction=0.6), recover=False), lambda *a: None
    )
    assert built.onnx_path.exists()
    built.cleanup()
    assert not built.onnx_path.exists() and built.scratch is not None and not built.scratch.exists()
