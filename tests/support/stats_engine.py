"""The ONNX test engine whose builds carry a statistics companion (issue 31), as the torch engine's do.

The companion is a real statistics model of the test engine's network (no torch): outputs "input.mean"
/"input.var" (the image's RGB statistics) and "stem.mean"/"stem.var" (the stem convolution's output per
channel, one per unit of the build's width), each over the batch it is given. Its metadata names those
layers and widths (`ModelMeta.norm_layers`), which a device's summary must match.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgecut.model_meta import ONNX_METADATA_KEY, ModelMeta
from edgecut.norm_stats import INPUT
from edgecut.server.spec import AdaptRequest, BuildSpec, BuiltArtifact, ProgressFn, Variant
from tests.support.onnx_engine import SIZE, OnnxTestEngine

STEM = "stem"


def stats_layers(width: int) -> dict[str, int]:
    return {INPUT: 3, STEM: width}


class StatsEngine(OnnxTestEngine):
    """`adapt` (issue 31) returns the parent's architecture and weights with metadata naming the summary's
    input means (other bytes per bucket), metrics `adapt_loss` Δm points below the parent's: not shipped
    when that is more than the request allows. `adapts` lists every adaptation started."""

    adapt_loss = 0.0

    def adapt(self, spec: BuildSpec, request: AdaptRequest, progress: ProgressFn) -> BuiltArtifact | None:
        self.adapts.append((spec, request))
        self._steps(spec, progress, [("adapting", 0.5)], self._refine_gate)
        if self.adapt_loss > request.max_loss:
            return None
        parent = request.parent.parent_meta
        built = self._artifact(spec, parent.refinement)
        mean = [round(float(v), 4) for v in request.layers[INPUT][0]]
        meta = built.meta.model_copy(
            update={
                "metrics": parent.metrics,
                "parent_artifact_id": request.parent.parent_artifact_id,
                "precision_note": f"test adaptation to input means {mean}",
            }
        )
        path = built.onnx_path.with_name(f"adapted-{uuid.uuid4().hex[:8]}.onnx")
        model = onnx.load(str(built.onnx_path))
        helper.set_model_props(model, {ONNX_METADATA_KEY: meta.to_json()})
        path.write_bytes(model.SerializeToString())
        built.onnx_path, built.meta = path, meta
        built.notes = [f"test adaptation ({request.method or 'default'})"]
        return built

    def _artifact(
        self, spec: BuildSpec, refinement: int = 0, parent: ModelMeta | None = None, narrower: bool = False
    ) -> BuiltArtifact:
        built = super()._artifact(spec, refinement, parent, narrower)
        model = onnx.load(str(built.onnx_path))
        stem_w = next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == "stem_w")
        meta = built.meta.model_copy(
            update={
                "precision": "stats",
                "metrics": {},
                "outputs": {},
                "norm_layers": stats_layers(stem_w.shape[0]),
            }
        )
        path = built.onnx_path.with_suffix(".stats.onnx")
        path.write_bytes(_statistics_model(stem_w, meta).SerializeToString())
        built.statistics = Variant(path, meta)
        return built


def _statistics_model(stem_w: np.ndarray, meta: ModelMeta) -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["image", "stem_w"], [STEM])]
    outputs = []
    for name, source in ((INPUT, "image"), (STEM, STEM)):
        c = meta.norm_layers[name]
        nodes += [
            helper.make_node("ReduceMean", [source], [f"{name}_m"], axes=[0, 2, 3], keepdims=1),
            helper.make_node("Sub", [source, f"{name}_m"], [f"{name}_d"]),
            helper.make_node("Mul", [f"{name}_d", f"{name}_d"], [f"{name}_sq"]),
            helper.make_node("ReduceMean", [f"{name}_m"], [f"{name}.mean"], axes=[0, 2, 3], keepdims=0),
            helper.make_node("ReduceMean", [f"{name}_sq"], [f"{name}.var"], axes=[0, 2, 3], keepdims=0),
        ]
        outputs += [
            helper.make_tensor_value_info(f"{name}{s}", TensorProto.FLOAT, [c]) for s in (".mean", ".var")
        ]
    graph = helper.make_graph(
        nodes,
        "edgecut_test_statistics",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        outputs,
        [numpy_helper.from_array(stem_w, "stem_w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {ONNX_METADATA_KEY: meta.to_json()})
    onnx.checker.check_model(model)
    return model


def summary_of(path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """The statistics model's outputs by name over `images` (what an agent would accumulate)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": images.astype(np.float32)}), strict=True))
