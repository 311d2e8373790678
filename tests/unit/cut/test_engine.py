"""The torch engine behind the fleet service: validate fast, build an ONNX artifact with metadata."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgecut.server.engine import load_engine
from edgecut.server.errors import ImpossibleBudgetError, UnknownTaskError
from edgecut.server.mtl import checkpoint
from edgecut.server.spec import Budget, BuildSpec


@pytest.fixture(scope="module")
def engine(tmp_path_factory, trained_small):
    d = tmp_path_factory.mktemp("engine")
    ckpt = d / "model.pt"
    checkpoint.save(ckpt, trained_small)
    return load_engine(ckpt, d, "synthetic", n_calib=48, n_val=32, recovery_steps=5)


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


def test_a_user_model_with_its_own_tasks_is_validated_on_its_folder(tmp_path) -> None:
    """Issue 16: folder calibration, then validation on synthetic scenes that lack the user's tasks
    (KeyError 'sum'); now validation is the folder's, for the tasks it labels."""
    from edgecut.server.mtl import build_model
    from edgecut.server.mtl.tasks import SCENE_TASKS, TaskSpec
    from edgecut_bench.scene_folder import write_scene_folder

    write_scene_folder(tmp_path / "data" / "train", 16, 1, 32, ("seg", "slant", "largest"))
    write_scene_folder(tmp_path / "data" / "val", 8, 2, 32, ("seg", "slant"))  # no labels for largest
    tasks = [SCENE_TASKS[0], TaskSpec("slant", "regression", 1), TaskSpec("largest", "classification", 4)]
    model = build_model("examples.unet:DepthwiseUNet", tasks=tasks, input_size=32, width=8, head_width=8)
    checkpoint.save(tmp_path / "m.pt", model)
    engine = load_engine(
        tmp_path / "m.pt",
        tmp_path,
        calib_data=str(tmp_path / "data"),
        n_calib=16,
        recovery_steps=2,
        min_delta_m=-math.inf,  # an untrained model: which tasks are judged is the point, not its Δm
    )
    built = engine.build(BuildSpec.create(["slant", "largest"], Budget(macs_fraction=0.5)), lambda *a: None)
    assert set(built.meta.metrics) == set(built.meta.reference_metrics) == {"slant"}
    assert set(built.meta.metrics["slant"]) == {"abs_err", "rmse"}
    assert built.meta.outputs["slant"].kind == "regression"
    built.cleanup()


def test_a_build_below_the_delta_m_floor_fails_with_each_tasks_change(engine, caplog, monkeypatch) -> None:
    """Issue 27: a build that lost too much is a failed build with its figures, not an artifact; before it
    fails, it is pruned again in the finer steps of 8 (steps of 16 can halve a narrow head at once)."""
    from edgecut.server import engine as engine_module
    from edgecut.server.errors import BuildError

    steps: list[int] = []
    tailor = engine_module.tailor
    monkeypatch.setattr(
        engine_module, "tailor", lambda *a, **k: steps.append(a[4].round_to) or tailor(*a, **k)
    )
    caplog.set_level(logging.INFO, logger="edgecut.server.engine")

    spec = BuildSpec.create(["depth", "seg"], Budget(macs_fraction=0.5), recover=False)
    engine.min_delta_m = 1e6  # beyond any model, so the test does not hang on how this one trained
    exported = set((engine.work_dir / "tmp").glob("build-*/model.onnx"))
    try:
        with pytest.raises(BuildError) as failed:
            engine.build(spec, lambda *a: None)
    finally:
        engine.min_delta_m = -30.0
    message = str(failed.value)
    assert message.startswith("the tailored model for depth, seg at macs=0.5 lost too much: Δm ")
    assert re.search(r"\(depth [-+]\d+\.\d %, seg [-+]\d+\.\d %\) is below the floor of \+1000000 %", message)
    assert "it was calibrated on edgecut's synthetic scenes, given by --calib-data" in message
    assert set((engine.work_dir / "tmp").glob("build-*/model.onnx")) == exported  # nothing exported
    # steps of 16 (and a rebalanced rebuild in 16s where it applies), then once in steps of 8
    assert set(steps[:-1]) == {16} and steps[-1] == 8 and "again in steps of 8" in caplog.text


def test_a_build_that_collapses_one_task_in_steps_of_16_is_pruned_again_in_steps_of_8(
    engine, caplog, monkeypatch
) -> None:
    """Steps of 16 can halve a narrow head at once: the demo's count+edges+seg quick model shipped with edges
    at -100 % while its Δm stayed above the floor. A task that lost half its metric sends the build back to
    steps of 8, and what ships is that build, with its own task changes."""
    from edgecut.server import engine as engine_module

    steps: list[int] = []
    tailor, evaluate = engine_module.tailor, engine._evaluate
    monkeypatch.setattr(
        engine_module, "tailor", lambda *a, **k: steps.append(a[4].round_to) or tailor(*a, **k)
    )

    def seg_collapses_in_16s(model):  # what the 32 -> 16 head did to edges, here to seg
        metrics = evaluate(model)
        if steps and steps[-1] == 16 and model is not engine.base:
            metrics = {**metrics, "seg": {k: 0.3 * v for k, v in metrics["seg"].items()}}
        return metrics

    monkeypatch.setattr(engine, "_evaluate", seg_collapses_in_16s)
    monkeypatch.setattr(engine, "min_delta_m", -100.0)  # above the Δm floor: the collapse alone decides
    caplog.set_level(logging.INFO, logger="edgecut.server.engine")
    built = engine.build(
        BuildSpec.create(["depth", "seg"], Budget(macs_fraction=0.5), recover=False), lambda *a: None
    )
    assert steps[0] == 16 and steps[-1] == 8 and "seg lost half or more in steps of 16" in caplog.text
    assert built.meta.task_changes["seg"] > -50  # the steps-of-8 build's figures, not the collapsed one's
    assert "pruned again in steps of 8: seg lost half or more in steps of 16" in built.notes
    built.cleanup()


def test_build_offers_a_checked_int8_variant_with_its_own_metrics(engine) -> None:
    """Issue 30: the quick build's fp32 model comes with a static INT8 twin measured on its own."""
    from edgecut.model_meta import ModelMeta
    from edgecut.server.cut.quantise import QuantOptions

    spec = BuildSpec.create(["depth", "seg"], Budget(macs_fraction=0.5))
    lenient = engine.quant
    engine.quant = QuantOptions(threshold=100.0)  # this small model's own int8 loss is not the point
    stages: list[str] = []
    try:
        built = engine.build(spec, lambda stage, f, detail: stages.append(detail))
    finally:
        engine.quant = lenient
    assert [v.meta.precision for v in built.variants] == ["int8"]
    (variant,) = built.variants
    meta = variant.meta
    assert meta.quantized and meta.build_key == built.meta.build_key == spec.build_key(engine.base_model_id)
    assert set(meta.metrics) == {"depth", "seg"} and meta.metrics != built.meta.metrics  # measured in int8
    assert set(meta.task_changes) == {"depth", "seg"} and meta.precision_note.startswith("int8 vs fp32: ")
    assert built.meta.precision == "fp32" and not built.meta.quantized
    sess = ort.InferenceSession(str(variant.onnx_path), providers=["CPUExecutionProvider"])
    embedded = ModelMeta.from_json(sess.get_modelmeta().custom_metadata_map["edgecut"])
    assert embedded == meta  # the file carries its own metadata, as the fp32 artifact does
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(variant.onnx_path)).graph.node}
    assert built.extras["quantise_s"] > 0 and any(n.startswith("int8 variant (") for n in built.notes)
    assert any(d.startswith("int8: ") for d in stages)
    built.cleanup()
    assert not variant.onnx_path.exists()


def test_an_engine_set_for_fp16_devices_offers_an_fp16_twin_with_its_own_metrics(engine) -> None:
    """Issue 30: with `fp16` (the server's fp16_variants), every build also carries an FP16 variant whose
    metrics were measured in FP16; off (the default), a build has none."""
    from edgecut.model_meta import ModelMeta

    spec = BuildSpec.create(["depth", "seg"], Budget(macs_fraction=0.6))
    quant, engine.quant = engine.quant, None  # the int8 twin is tested above
    try:
        plain = engine.build(spec, lambda *a: None)
        engine.fp16 = True
        built = engine.build(spec, lambda *a: None)
    finally:
        engine.quant, engine.fp16 = quant, False
    assert plain.variants == []
    (variant,) = built.variants
    meta = variant.meta
    assert meta.precision == "fp16" and meta.build_key == built.meta.build_key and not meta.quantized
    assert set(meta.metrics) == {"depth", "seg"} and set(meta.task_changes) == {"depth", "seg"}
    # fp16 rounds the weights: its metrics are its own, and close to the fp32 model's
    for task, change in meta.task_changes.items():
        assert abs(change - built.meta.task_changes[task]) < 0.5
    graph = onnx.load(str(variant.onnx_path)).graph
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer)
    sess = ort.InferenceSession(str(variant.onnx_path), providers=["CPUExecutionProvider"])
    assert ModelMeta.from_json(sess.get_modelmeta().custom_metadata_map["edgecut"]) == meta
    assert any(n.startswith("fp16 variant (") for n in built.notes)
    built.cleanup()
    plain.cleanup()


def test_a_build_whose_int8_fails_the_check_says_why_on_the_fp32_model(engine) -> None:
    from edgecut.model_meta import ModelMeta
    from edgecut.server.cut.quantise import QuantOptions

    spec = BuildSpec.create(["depth"], Budget(macs_fraction=0.6), recover=False)
    kept = engine.quant
    engine.quant = QuantOptions(threshold=-100.0, max_excluded=0)  # int8 would have to gain 100 points
    try:
        built = engine.build(spec, lambda *a: None)
    finally:
        engine.quant = kept
    assert built.variants == []
    assert built.meta.precision_note.startswith("no int8 variant: int8 lost more than -100 point")
    sess = ort.InferenceSession(str(built.onnx_path), providers=["CPUExecutionProvider"])
    embedded = ModelMeta.from_json(sess.get_modelmeta().custom_metadata_map["edgecut"])
    assert embedded.precision_note == built.meta.precision_note
    built.cleanup()


def test_a_quantiser_that_fails_leaves_the_build_fp32_with_one_sentence(engine, monkeypatch) -> None:
    from edgecut.server.cut import quantise

    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported model IR version\nwith a second line")

    monkeypatch.setattr(quantise, "quantize_static", broken)
    built = engine.build(BuildSpec.create(["seg"], Budget(macs_fraction=0.6), recover=False), lambda *a: None)
    assert built.variants == [] and built.onnx_path.exists()
    note = built.meta.precision_note
    assert note == "no int8 variant: onnxruntime could not quantise the model: Unsupported model IR version"
    built.cleanup()


def test_every_build_carries_its_statistics_companion_with_its_layer_widths(engine) -> None:
    """Issue 31: beside the fp32 model, the export of its statistics model (precision "stats"), whose
    metadata names each normalisation layer and its channels: what a device's summary must hold."""
    from edgecut.model_meta import ModelMeta
    from edgecut.norm_stats import INPUT

    quant, engine.quant = engine.quant, None
    try:
        built = engine.build(BuildSpec.create(["depth", "seg"], Budget(macs_fraction=0.5)), lambda *a: None)
    finally:
        engine.quant = quant
    stats = built.statistics
    assert stats is not None and stats.onnx_path.parent == built.onnx_path.parent
    meta = stats.meta
    assert meta.precision == "stats" and meta.build_key == built.meta.build_key
    assert meta.metrics == {} and meta.outputs == {} and built.meta.norm_layers == {}
    sess = ort.InferenceSession(str(stats.onnx_path), providers=["CPUExecutionProvider"])
    assert ModelMeta.from_json(sess.get_modelmeta().custom_metadata_map["edgecut"]) == meta
    # the widths are the pruned model's: one batch of 3 images gives one vector per layer of that length
    outputs = sess.run(None, {"image": np.random.rand(3, 3, 32, 32).astype(np.float32)})
    got = {o.name: v.shape for o, v in zip(sess.get_outputs(), outputs, strict=True)}
    assert next(iter(meta.norm_layers)) == INPUT and meta.norm_layers[INPUT] == 3
    assert got == {f"{n}.{s}": (c,) for n, c in meta.norm_layers.items() for s in ("mean", "var")}
    pruned = {n: m.num_features for n, m in _batchnorms(engine, built)}
    assert {n: c for n, c in meta.norm_layers.items() if n != INPUT} == pruned
    assert sum(pruned.values()) < sum(c for _, c in _full_batchnorms(engine))  # the pruned widths
    assert any(n.startswith("statistics companion (") for n in built.notes)
    built.cleanup()


def test_a_model_without_batchnorm_ships_without_a_companion(engine, tmp_path, caplog) -> None:
    import copy

    from torch import nn

    from edgecut.server.spec import BuiltArtifact

    model = copy.deepcopy(engine.base)
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.BatchNorm2d):
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, nn.Identity())
    built = BuiltArtifact(tmp_path / "model.onnx", engine._meta(*_meta_args(engine, model)))
    with caplog.at_level("INFO"):
        engine._add_statistics(built, model, lambda *a: None)
    assert built.statistics is None and not (tmp_path / "model.stats.onnx").exists()
    assert [r.getMessage() for r in caplog.records if "statistics" in r.getMessage()] == [
        f"build {built.meta.build_key[:12]}: no statistics companion: "
        f"{type(model).__name__} has no BatchNorm layer: there is nothing to adapt"
    ]


def _meta_args(engine, model):
    from edgecut.server.cut.prune import measure

    return BuildSpec.create(["depth"], Budget(macs_fraction=1.0)), model, measure(model, 32), {}, "test"


def _batchnorms(engine, built):
    """The BatchNorm layers of the model `built` exported, re-derived as the engine does for refinements."""
    from edgecut.server.spec import Refinement

    spec = BuildSpec.create(["depth", "seg"], Budget(macs_fraction=0.5))
    model = engine._rederive(spec, Refinement("", built.meta, 1))[1].model
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]


def _full_batchnorms(engine):
    return [
        (n, m.num_features)
        for n, m in engine.base.select(["depth", "seg"]).named_modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    ]
