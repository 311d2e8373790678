"""Issue 31, engine side of the adaptation job: the delivered model (re-derived, its saved weights
restored, as a refinement loads its parent) adapted to a device's statistics, exported with its variants
and companion, and shipped only when the summary shows a shift and it loses at most `max_loss` points of Δm
on the validation set as the device's camera shows it."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from edgecut import norm_stats
from edgecut.server.cut.refine import quality
from edgecut.server.engine import load_engine
from edgecut.server.errors import BuildError
from edgecut.server.mtl import checkpoint
from edgecut.server.mtl.data import batches
from edgecut.server.spec import AdaptRequest, Budget, BuildSpec, Refinement

SPEC = BuildSpec.create(["seg", "depth"], Budget(macs_fraction=0.5))


@pytest.fixture(scope="module")
def engine(tmp_path_factory, trained_small):
    d = tmp_path_factory.mktemp("adapt")
    checkpoint.save(d / "model.pt", trained_small)
    return load_engine(
        d / "model.pt",
        d,
        "synthetic",
        n_calib=48,
        n_val=32,
        recovery_steps=3,
        refine_steps=(4,),
        train_data="off",
    )


@pytest.fixture(scope="module")
def quick(engine):
    built = engine.build(SPEC, lambda *a: None)
    yield built
    built.cleanup()


def _layers(companion, engine, scale: float) -> norm_stats.Layers:
    """What a device's agent would send: the companion run over its images (calibration images x scale)."""
    session = ort.InferenceSession(str(companion), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    acc = norm_stats.Accumulator()
    for batch in batches(engine.calib, 16):
        x = (batch["image"].numpy() * scale).astype(np.float32)
        acc.add(dict(zip(names, session.run(None, {"image": x}), strict=True)), len(x))
    return acc.layers()


def test_a_dim_device_gets_a_model_adapted_to_it_judged_on_the_scenes_as_its_camera_shows_them(
    engine, quick
) -> None:
    assert quick.statistics is not None
    dim = _layers(quick.statistics.onnx_path, engine, 0.4)  # the dark shift
    request = AdaptRequest(Refinement("quick-id", quick.meta, quick.meta.refinement), dim, "adabn", 0.5)
    built = engine.adapt(SPEC, request, lambda *a: None)
    assert built is not None
    try:
        x = built.extras
        # where the device is (the validation scenes as a dim camera shows them) it gains; the unshifted
        # scenes are not the device's and do not decide (the demo's dim garage was refused on them)
        assert x["device_view_delta_m_adapted"] > x["device_view_delta_m_unadapted"]
        specs = {t: engine.base.task_specs[t] for t in SPEC.tasks}
        assert quality(built.meta.metrics, built.meta.reference_metrics, specs) == x["delta_m_adapted"]
        assert built.meta.parent_artifact_id == "quick-id" and built.meta.macs == quick.meta.macs
        assert built.statistics is not None
        assert built.statistics.meta.norm_layers == quick.statistics.meta.norm_layers
        assert built.notes[0].startswith("adapted (adabn) to the device's statistics")
    finally:
        built.cleanup()


def test_made_up_statistics_that_cost_quality_are_not_shipped(engine, quick) -> None:
    """A summary with the server's own input statistics but deeper layers that were never measured:
    not shipped; the same summary as measured (an unshifted device) loses at most max_loss."""
    assert quick.statistics is not None
    clean = _layers(quick.statistics.onnx_path, engine, 1.0)
    made_up = {
        name: (m, v) if name == norm_stats.INPUT else (m + 3.0 * np.sqrt(v), v * 25.0)
        for name, (m, v) in clean.items()
    }
    request = AdaptRequest(Refinement("quick-id", quick.meta, quick.meta.refinement), made_up, "adabn", 0.5)
    assert engine.adapt(SPEC, request, lambda *a: None) is None
    # the same summary, measured: an unshifted device loses at most max_loss
    honest = AdaptRequest(Refinement("quick-id", quick.meta, quick.meta.refinement), clean, "adabn", 0.5)
    built = engine.adapt(SPEC, honest, lambda *a: None)
    assert built is not None
    try:
        assert built.extras["delta_m_adapted"] >= built.extras["delta_m_unadapted"] - 0.5
    finally:
        built.cleanup()


def test_a_model_whose_weights_are_not_kept_cannot_be_adapted(engine, quick) -> None:
    assert quick.statistics is not None
    gone = quick.meta.model_copy(update={"refinement": 9})
    layers = _layers(quick.statistics.onnx_path, engine, 1.0)
    with pytest.raises(BuildError, match="not kept on this server"):
        engine.adapt(SPEC, AdaptRequest(Refinement("gone", gone, 9), layers), lambda *a: None)


def test_a_device_whose_statistics_show_no_shift_gets_nothing_new(engine, quick) -> None:
    """cut/adapt.py's default finds no shift in the summary of a camera like the server's: nothing is
    built, so the device keeps the model it has (installing its statistics would only add noise)."""
    assert quick.statistics is not None
    same = _layers(quick.statistics.onnx_path, engine, 1.0)
    request = AdaptRequest(Refinement("quick-id", quick.meta, quick.meta.refinement), same)
    assert engine.adapt(SPEC, request, lambda *a: None) is None
