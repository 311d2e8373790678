"""FP16: a tailored fp32 ONNX model converted to half precision, checked against its fp32 twin.

For devices whose execution provider runs FP16 natively (CUDA, TensorRT: the agent's needs say which,
Resources.ort_providers; runs_fp16). On a CPU it brings nothing: onnxruntime's CPU provider runs the
fp16 graph through Casts to fp32 (measured 2.13 ms against fp32's 2.11 ms, the full packaged reference
at 64 px, one thread, this 2-core x86 host, interleaved_latency_ms). The graph's inputs and outputs
stay fp32 (`keep_io_types`), so the agent feeds and reads it as the fp32 model.

The check: every task's outputs on the same images, fp16 against fp32, must agree within
`tolerance` of the fp32 output's largest magnitude (default 1 %; measured on the packaged reference
tailored to half its MACs, seg+depth and seg+depth+normals, 16 rendered scenes: 0.04-0.40 %). A model
over it raises BuildError naming the task: ship the fp32 model alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.transformers.float16 import convert_float_to_float16

from edgecut.model_meta import ONNX_METADATA_KEY, ModelMeta
from edgecut.server.errors import BuildError
from edgecut.server.ort_latency import session

logger = logging.getLogger(__name__)

FP16_TOLERANCE = 0.01  # of the fp32 output's largest magnitude, per task
FP16_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")  # run fp16 kernels natively
CHECK_IMAGES = 8  # random images in the input's value range, when the caller passes none


@dataclass(frozen=True)
class HalfCheck:
    """Per task, max |fp16 - fp32| / max |fp32| on the check images; and both files' sizes."""

    errors: dict[str, float]
    tolerance: float
    fp32_bytes: int
    fp16_bytes: int


def runs_fp16(providers: Sequence[str]) -> bool:
    """Whether a device whose model runs on `providers` (its needs' Resources.ort_providers) gains from FP16."""
    return any(p in FP16_PROVIDERS for p in providers)


def to_fp16(
    src: Path, dst: Path, images: np.ndarray | None = None, tolerance: float = FP16_TOLERANCE
) -> HalfCheck:
    """Write the FP16 twin of the fp32 model `src` to `dst`, check it, and return the check's figures."""
    proto = onnx.load(str(src))
    meta = _meta(proto, src)
    if meta.precision != "fp32":
        raise BuildError(f"{src.name} is a {meta.precision} model: FP16 is made from the fp32 one")
    try:
        half = convert_float_to_float16(proto, keep_io_types=True)
    except Exception as exc:  # onnx's and the converter's own error types
        raise BuildError(f"cannot convert {src.name} to FP16: {exc}") from exc
    _set_meta(half, meta.model_copy(update={"precision": "fp16"}))
    tmp = dst.with_name(dst.name + ".tmp")
    onnx.save(half, str(tmp))
    try:
        errors = compare(src, tmp, images if images is not None else _images(meta))
        worst = max(errors, key=errors.__getitem__)
        if errors[worst] > tolerance:
            raise BuildError(
                f"the FP16 model's {worst!r} output is {errors[worst]:.2%} off the fp32 one (tolerance "
                f"{tolerance:.2%}): keep the fp32 model"
            )
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    check = HalfCheck(errors, tolerance, src.stat().st_size, dst.stat().st_size)
    logger.info(
        "FP16 %s: %.0f%% of the fp32 file, worst task %s off by %.3f%%",
        dst.name,
        100 * check.fp16_bytes / check.fp32_bytes,
        worst,
        100 * errors[worst],
    )
    return check


def compare(fp32: Path, other: Path, images: np.ndarray) -> dict[str, float]:
    """Per output, max |other - fp32| / max |fp32| on `images` (onnxruntime's CPU provider)."""
    a, b = session(fp32), session(other)
    names = [o.name for o in a.get_outputs()]
    want = a.run(names, {"image": images})
    got = b.run(names, {"image": images})
    return {
        n: float(np.abs(g - w).max() / max(float(np.abs(w).max()), 1e-6))
        for n, w, g in zip(names, want, got, strict=True)
    }


def _meta(proto: onnx.ModelProto, src: Path) -> ModelMeta:
    for entry in proto.metadata_props:
        if entry.key == ONNX_METADATA_KEY:
            return ModelMeta.from_json(entry.value)
    raise BuildError(f"{src.name} has no {ONNX_METADATA_KEY!r} metadata: not an edgecut model")


def _set_meta(proto: onnx.ModelProto, meta: ModelMeta) -> None:
    for entry in proto.metadata_props:
        if entry.key == ONNX_METADATA_KEY:
            entry.value = meta.to_json()
            return
    proto.metadata_props.add(key=ONNX_METADATA_KEY, value=meta.to_json())


def _images(meta: ModelMeta) -> np.ndarray:
    lo, hi = meta.input.value_range
    shape = [CHECK_IMAGES if d is None else d for d in meta.input.shape]
    return np.random.default_rng(0).uniform(lo, hi, size=shape).astype(np.float32)
