"""Measured onnxruntime CPU latency of a model at batch 1 (what a device would see)."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch

from edgecut.server.cut.export import OPSET
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.ort_latency import onnx_latency_ms

__all__ = ["export_for_timing", "model_latency_ms", "onnx_latency_ms"]


def export_for_timing(model: MultiTaskModel, path: Path) -> Path:
    """`model` as a plain ONNX file (input "image", one output per task) to time with onnxruntime."""
    x = torch.rand(1, 3, model.input_size, model.input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (x,),
            str(path),
            input_names=["image"],
            output_names=model.task_names,
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def model_latency_ms(model: MultiTaskModel, runs: int = 60, threads: int = 1) -> float:
    """Export `model` to a temporary ONNX file and time it."""
    with tempfile.TemporaryDirectory() as d:
        path = export_for_timing(model, Path(d) / "m.onnx")
        return onnx_latency_ms(path, model.input_size, runs, threads=threads)
