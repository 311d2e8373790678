"""Measured onnxruntime CPU latency of a model at batch 1 (what a device would see)."""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from edgecut.server.cut.export import OPSET, session
from edgecut.server.mtl.contract import MultiTaskModel


def onnx_latency_ms(path: Path, size: int, runs: int = 60, warmup: int = 10, threads: int = 1) -> float:
    sess = session(path, threads)
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    for _ in range(warmup):
        sess.run(None, {"image": x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {"image": x})
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def model_latency_ms(model: MultiTaskModel, runs: int = 60, threads: int = 1) -> float:
    """Export `model` to a temporary ONNX file and time it."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.onnx"
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
        return onnx_latency_ms(path, model.input_size, runs, threads=threads)
