"""Export a tailored model to ONNX (dynamic batch, one named output per task), embed its metadata and
check onnxruntime agrees with torch (static INT8 variants: quantise.py)."""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from edgecut.model_meta import ONNX_METADATA_KEY, InputSpec, ModelMeta, OutputSpec
from edgecut.server.errors import BuildError
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.ort_latency import session

logger = logging.getLogger(__name__)
OPSET = 17


def input_spec(model: MultiTaskModel) -> InputSpec:
    return InputSpec(
        shape=[None, 3, model.input_size, model.input_size],
        mean=[float(v) for v in model.pixel_mean.flatten()],
        std=[float(v) for v in model.pixel_std.flatten()],
    )


def output_specs(model: MultiTaskModel) -> dict[str, OutputSpec]:
    with torch.no_grad():
        out = model.eval()(torch.rand(1, 3, model.input_size, model.input_size))
    return {
        t: OutputSpec(
            name=t,
            kind=model.task_specs[t].kind,
            shape=[None, *y.shape[1:]],
            classes=list(model.task_specs[t].classes),
        )
        for t, y in out.items()
    }


def plain_meta(model: MultiTaskModel, base_model: str = "t") -> ModelMeta:
    """Metadata for a model exported without a tailoring report (its sizes are placeholders)."""
    return ModelMeta(
        base_model=base_model,
        tasks=model.task_names,
        input=input_spec(model),
        outputs=output_specs(model),
        params=1,
        macs=1,
        full_params=1,
        full_macs=1,
    )


def export_onnx(model: MultiTaskModel, meta: ModelMeta, path: Path) -> float:
    """Write `path`; returns the largest |torch - onnxruntime| over every output on a test batch."""
    model = model.eval()
    tasks = model.task_names
    x = torch.rand(2, 3, model.input_size, model.input_size, generator=torch.Generator().manual_seed(0))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    dynamic = {"image": {0: "batch"}, **{t: {0: "batch"} for t in tasks}}
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated but ~6x faster than dynamo for these models.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (x,),
                str(tmp),
                input_names=["image"],
                output_names=tasks,
                dynamic_axes=dynamic,
                opset_version=OPSET,
                dynamo=False,
            )
    except Exception as exc:  # the exporter raises many types
        raise BuildError(f"ONNX export failed: {exc}") from exc
    proto = onnx.load(str(tmp))
    for out in proto.graph.output:  # concrete shapes instead of the exporter's symbolic names
        dims = meta.outputs[out.name].shape
        for d, v in zip(out.type.tensor_type.shape.dim, dims, strict=True):
            if v is None:
                d.dim_param = "batch"
            else:
                d.dim_value = int(v)
    _embed(proto, meta)
    onnx.save(proto, str(tmp))
    diff = max_abs_diff(model, tmp, x)
    tmp.replace(path)
    return diff


def max_abs_diff(model: MultiTaskModel, path: Path, x: torch.Tensor) -> float:
    with torch.no_grad():
        ref = model(x)
    sess = session(path)
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(None, {"image": x.numpy()}), strict=True))
    return max(float(np.abs(got[t] - ref[t].numpy()).max()) for t in ref)


def embed_meta(path: Path, meta: ModelMeta) -> None:
    """Write `meta` into the ONNX file's metadata (replacing what it held), atomically."""
    proto = onnx.load(str(path))
    _embed(proto, meta)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(path)


def _embed(proto: onnx.ModelProto, meta: ModelMeta) -> None:
    kept = [p for p in proto.metadata_props if p.key != ONNX_METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key=ONNX_METADATA_KEY, value=meta.to_json())
    what = f"{meta.precision} " if meta.precision != "fp32" else ""
    proto.doc_string = f"edgecut tailored {what}model for tasks {', '.join(meta.tasks)}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
