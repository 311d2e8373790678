"""Measured onnxruntime CPU latency of an ONNX file at batch 1 (what a device would see); no torch, so
the fleet service can time artifacts too (fleet/latency_model.py)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def onnx_latency_ms(path: Path, size: int, runs: int = 60, warmup: int = 10, threads: int = 1) -> float:
    """The median of `runs` timed batch-1 runs on a random `size` x `size` image (input "image")."""
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
