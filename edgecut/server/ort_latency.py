"""Measured onnxruntime CPU latency of an ONNX file at batch 1 (what a device would see); no torch, so
the fleet service can time artifacts too (fleet/policy/latency.py)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
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
    x = _image(size)
    _median_ms(sess, x, warmup)
    return _median_ms(sess, x, runs)


def _image(size: int) -> np.ndarray:
    return np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)


def _median_ms(sess: ort.InferenceSession, x: np.ndarray, runs: int) -> float:
    """The median of `runs` timed batch-1 runs (also the warm-up, its figure unused)."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {"image": x})
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times) if times else 0.0


ROUNDS, RUNS_PER_ROUND = 7, 30  # interleaved_latency_ms's defaults (bench quality states them)


def interleaved_latency_ms(
    paths: Sequence[Path],
    size: int,
    rounds: int = ROUNDS,
    runs: int = RUNS_PER_ROUND,
    warmup: int = 10,
    threads: int = 1,
) -> list[float]:
    """Several files timed in turns: each of `rounds` rounds runs every file `runs` times; a file's figure
    is the lowest of its per-round medians.

    Models timed minutes apart on a busy machine carry the load of their own minutes into a comparison
    (one architecture measured 1.08 and 1.13 ms in one table); timed in turns, every file sees the same
    load, and the least disturbed round is the closest to an idle device.
    """
    sessions = [session(p, threads) for p in paths]
    x = _image(size)
    for sess in sessions:
        _median_ms(sess, x, warmup)
    best = [float("inf")] * len(sessions)
    for _ in range(rounds):
        for i, sess in enumerate(sessions):
            best[i] = min(best[i], _median_ms(sess, x, runs))
    return best
