"""The ONNX test engine, its builds offered in two precisions (issue 30): an fp32 model and an "int8"
variant of it (no torch, no quantiser: the variant is labelled int8 in its metadata).

The variant is genuinely faster or slower, by compute, never by a timing hook: with `int8="faster"`
the fp32 model carries the slow fault's chain of 3x3 convolutions and the variant does not; with
`int8="slower"` it is the other way round. Both are the same tasks, input and outputs. `int8_change`:
the variant's change against its fp32 twin in points (made-up figures, not measurements); `fp16=True`
adds an fp16 variant too (offered only to CUDA/TensorRT devices). `int8="none"`: no variants.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import onnx

from edgecut.model_meta import ModelMeta
from edgecut.server.spec import BuildSpec, BuiltArtifact, Variant
from tests.support.onnx_engine import OnnxTestEngine

FP32_CHANGE = -2.0  # every task's change against the full model in fp32 (test data)


class VariantEngine(OnnxTestEngine):
    def __init__(
        self,
        workdir: Path | None = None,
        int8: Literal["faster", "slower", "none"] = "faster",
        int8_change: float = -0.3,
        fp16: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(workdir, **kw)
        self.int8, self.int8_change, self.fp16 = int8, int8_change, fp16

    def _artifact(
        self, spec: BuildSpec, refinement: int = 0, parent: ModelMeta | None = None, narrower: bool = False
    ) -> BuiltArtifact:
        built = super()._artifact(spec, refinement, parent, narrower)
        if self.int8 == "none":
            return built
        width = _width(built.onnx_path)
        seed = int(built.meta.build_key[:8], 16) + refinement
        fp32 = built.meta.model_copy(update={"task_changes": {t: FP32_CHANGE for t in spec.tasks}})
        built = BuiltArtifact(
            self._write(built.onnx_path, spec, width, fp32, seed, self.int8 == "faster"), fp32
        )
        variants = [("int8", self.int8_change, self.int8 == "slower")]
        if self.fp16:
            variants.append(("fp16", 0.0, False))
        for precision, change, slow in variants:
            meta = fp32.model_copy(
                update={"precision": precision, "task_changes": {t: FP32_CHANGE + change for t in spec.tasks}}
            )
            path = built.onnx_path.with_suffix(f".{precision}.onnx")
            built.variants.append(Variant(self._write(path, spec, width, meta, seed + 7, slow), meta))
        return built

    def _write(self, path: Path, spec: BuildSpec, width: int, meta: ModelMeta, seed: int, slow: bool) -> Path:
        path.write_bytes(self._model(spec.tasks, width, meta, seed, slow=slow).SerializeToString())
        return path


def _width(path: Path) -> int:
    """The stem's width of a model the test engine wrote."""
    model = onnx.load(str(path))
    return next(int(i.dims[0]) for i in model.graph.initializer if i.name == "stem_w")
