"""Small, real ONNX multi-task models built with `onnx.helper` (no torch) for the agent's tests.

Each model takes `image` N x 3 x S x S and has one output per task, with `ModelMeta` embedded in
`metadata_props["edgecut"]` exactly as the server's exporter writes it. The faulty variants are the
ones the agent must refuse: NaN outputs, outputs shaped unlike the metadata, bytes that do not load.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgecut.model_meta import ONNX_METADATA_KEY, InputSpec, ModelMeta, OutputSpec

SEG_CLASSES = ["floor", "wall", "sphere", "box"]
COUNT_CLASSES = ["1", "2", "3"]
# task name -> (kind, channels)
TASKS: dict[str, tuple[str, int]] = {
    "seg": ("segmentation", len(SEG_CLASSES)),
    "depth": ("depth", 1),
    "edges": ("edges", 1),
    "count": ("classification", len(COUNT_CLASSES)),
}


def _init(name: str, arr: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(arr.astype(np.float32), name)


def build_model(
    tasks: list[str],
    size: int = 64,
    width: int = 8,
    seed: int = 0,
    fault: str | None = None,
) -> bytes:
    """Serialized ONNX bytes; `fault` is None, "nan" (outputs NaN) or "shape" (metadata lies)."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["image", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["trunk"]),
    ]
    inits = [
        _init("w0", rng.normal(0, 0.3, (width, 3, 3, 3))),
        _init("b0", rng.normal(0, 0.1, (width,))),
    ]
    outputs, specs = [], {}
    for task in tasks:
        kind, ch = TASKS[task]
        inits += [_init(f"w_{task}", rng.normal(0, 0.3, (ch, width, 1, 1))), _init(f"b_{task}", np.zeros(ch))]
        head = f"h_{task}"
        nodes.append(helper.make_node("Conv", ["trunk", f"w_{task}", f"b_{task}"], [head]))
        if kind == "classification":
            nodes += [
                helper.make_node("GlobalAveragePool", [head], [f"p_{task}"]),
                helper.make_node("Flatten", [f"p_{task}"], [f"f_{task}"], axis=1),
            ]
            head, shape = f"f_{task}", [None, ch]
        else:
            shape = [None, ch, size, size]
        if fault == "nan":
            inits.append(_init(f"nan_{task}", np.array([np.nan])))
            nodes.append(helper.make_node("Add", [head, f"nan_{task}"], [f"n_{task}"]))
            head = f"n_{task}"
        nodes.append(helper.make_node("Identity", [head], [task]))
        outputs.append(helper.make_tensor_value_info(task, TensorProto.FLOAT, ["N", *shape[1:]]))
        meta_shape = list(shape)
        if fault == "shape":
            meta_shape[1] = ch + 1  # the metadata promises one channel more than the graph makes
        classes = SEG_CLASSES if task == "seg" else COUNT_CLASSES if task == "count" else []
        specs[task] = OutputSpec(name=task, kind=kind, shape=meta_shape, classes=classes)  # type: ignore[arg-type]
    graph = helper.make_graph(
        nodes,
        "edgecut-test",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    params = sum(int(np.prod(i.dims)) for i in inits)
    meta = ModelMeta(
        base_model="test-mtl",
        tasks=list(tasks),
        input=InputSpec(shape=[None, 3, size, size], mean=[0.5] * 3, std=[0.25] * 3),
        outputs=specs,
        params=params,
        macs=params * size * size,
        full_params=params,
        full_macs=params * size * size,
        build_key=f"test-{'-'.join(tasks)}-{seed}",
    )
    helper.set_model_props(model, {ONNX_METADATA_KEY: meta.model_dump_json()})
    onnx.checker.check_model(model)
    return model.SerializeToString()


from tests.support.onnx_engine import corrupted  # noqa: E402  (shared with the fast engine)

__all__ = ["artifact_id", "build_model", "corrupted", "meta_of", "write"]


def write(path: Path, data: bytes) -> str:
    """Write the artifact and return its id (= sha256 of the bytes)."""
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def artifact_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def meta_of(data: bytes) -> ModelMeta:
    """The ModelMeta embedded in serialized ONNX bytes."""
    props = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
    return ModelMeta.from_json(props[ONNX_METADATA_KEY])


def tiny_meta(tasks: list[str] | None = None) -> ModelMeta:
    """A minimal valid ModelMeta, for store tests that never load the model."""
    return ModelMeta(
        base_model="b",
        tasks=tasks or ["seg"],
        input=InputSpec(shape=[None, 3, 8, 8], mean=[0, 0, 0], std=[1, 1, 1]),
        outputs={},
        params=1,
        macs=2,
        full_params=3,
        full_macs=4,
    )
