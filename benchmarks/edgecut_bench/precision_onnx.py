"""ONNX files as `edgecut bench precision` handles them: the user's static INT8 (onnxruntime's own tools,
nothing of edgecut's), the same file at a larger input size, and many files timed in turns.

No torch here: these work on files, the way a user and a device see them.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgecut.errors import ConfigError
from edgecut.server.ort_latency import session


class _Scenes(CalibrationDataReader):
    """The calibration images, one batch-1 input at a time (what onnxruntime's examples do)."""

    def __init__(self, images: np.ndarray) -> None:
        self.images, self.at = images, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.at >= len(self.images):
            return None
        self.at += 1
        return {"image": np.ascontiguousarray(self.images[self.at - 1 : self.at], dtype=np.float32)}


# what a user may pick for the activations: onnxruntime's default (signed) or unsigned, its x86 fast path
USER_SCHEMES = {"S8S8": QuantType.QInt8, "U8S8": QuantType.QUInt8}


def user_static_int8(src: Path, dst: Path, images: np.ndarray, scheme: str = "S8S8") -> None:
    """What a user does with onnxruntime alone: `quant_pre_process`, then `quantize_static` in QDQ format
    with per-channel weights, calibrated on `images` (N x 3 x H x W floats), activations per `scheme`
    (USER_SCHEMES); every other setting is onnxruntime's default (MinMax calibration, QInt8 weights)."""
    with tempfile.TemporaryDirectory(prefix="user-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre))
        quantize_static(
            str(pre),
            str(dst),
            _Scenes(images),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=USER_SCHEMES[scheme],
        )


# operators whose output size is an input: (its index); quant_pre_process folds the exporter's
# Shape -> Concat into constants, so a unit-norm head's Expand carries the image size too
SIZE_INPUTS = {"Resize": 3, "Expand": 1}


def resized(src: Path, dst: Path, size: int) -> Path:
    """`src` (square input "image") rewritten to take `size` x `size` images.

    The dense models are convolutions and bilinear resizes; the exporter writes each resize's target (the
    skip connection's size, the input's size) as a constant, so those constants (and the sizes
    pre-processing folded into constants) are scaled with the input; sizes the graph computes from a
    tensor's shape are right at any size; every recorded shape is dropped for onnxruntime to infer again.
    tests/unit/bench/test_precision_onnx.py checks the result against the model built for `size`."""
    model = onnx.load(str(src))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    old = dims[2].dim_value
    if not old or dims[3].dim_value != old:
        shape = [d.dim_value or d.dim_param for d in dims]
        raise ConfigError(f"{src.name}: only a fixed square input can be resized, it takes {shape}")
    scale = size / old
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    done: set[str] = set()

    def rescale(name: str, node: str) -> None:
        if name in done:
            return
        init = inits.get(name)
        constant = producers.get(name)
        if init is not None:
            init.CopyFrom(_scaled(init, scale))
        elif constant is not None and constant.op_type == "Constant":
            constant.attribute[0].t.CopyFrom(_scaled(constant.attribute[0].t, scale))
        elif constant is not None and constant.op_type == "Concat":  # (N, C) from Shape ++ (H, W) constant
            for part in constant.input:
                if part in inits or producers.get(part, constant).op_type == "Constant":
                    rescale(part, node)
        elif constant is None:
            raise ConfigError(f"{src.name}: {node} takes its size from the graph's input {name}")
        done.add(name)  # else computed from a tensor's shape when it runs: right at any size

    for node in model.graph.node:
        at = SIZE_INPUTS.get(node.op_type)
        if at is not None and len(node.input) > at and node.input[at]:
            rescale(node.input[at], node.name)
    dims[2].dim_value = dims[3].dim_value = size
    del model.graph.value_info[:]
    for out in model.graph.output:
        out.type.tensor_type.ClearField("shape")
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst


def _scaled(tensor: onnx.TensorProto, scale: float) -> onnx.TensorProto:
    """An int64 size tensor with its last two entries (height, width) times `scale`."""
    values = numpy_helper.to_array(tensor).copy()
    if values.dtype != np.int64 or values.ndim != 1 or len(values) < 2:
        raise ConfigError(f"resize target {tensor.name} is not a list of sizes: {values}")
    scaled = values[-2:] * scale
    if not np.allclose(scaled, np.round(scaled)):
        raise ConfigError(f"resize target {tensor.name} {values[-2:]} times {scale:g} is not a whole size")
    values[-2:] = np.round(scaled).astype(np.int64)
    return numpy_helper.from_array(values, tensor.name)


def timed_in_turns(
    paths: Sequence[Path], size: int, rounds: int, runs: int, threads: int, warmup: int = 10
) -> list[float]:
    """Each file's median ms at batch 1 over `rounds` rounds; a round runs every file `runs` times in
    turn (its figure for the round: the median of those runs), so every file sees the same load."""
    sessions = [session(p, threads) for p in paths]
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    per_round: list[list[float]] = [[] for _ in paths]
    for sess in sessions:
        _runs_ms(sess, x, warmup)
    for _ in range(rounds):
        for i, sess in enumerate(sessions):
            per_round[i].append(statistics.median(_runs_ms(sess, x, runs)))
    return [statistics.median(r) for r in per_round]


def _runs_ms(sess: object, x: np.ndarray, runs: int) -> list[float]:
    run = sess.run  # type: ignore[attr-defined]
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run(None, {"image": x})
        times.append(1000 * (time.perf_counter() - t))
    return times
