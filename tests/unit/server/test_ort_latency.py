"""Latency figures that compare models: timed in turns, each file keeps its own figure."""

from __future__ import annotations

from pathlib import Path

from edgecut.server.ort_latency import interleaved_latency_ms
from tests.support.onnx_models import build_model


def test_models_timed_in_turns_keep_their_order_and_the_heavier_one_is_slower(tmp_path: Path) -> None:
    thin, wide = tmp_path / "thin.onnx", tmp_path / "wide.onnx"
    thin.write_bytes(build_model(["seg", "depth"], size=64, width=4))
    wide.write_bytes(build_model(["seg", "depth"], size=64, width=256))  # 64x the first conv's work

    ms = interleaved_latency_ms([thin, wide, thin], 64, rounds=2, runs=5, warmup=2)

    assert len(ms) == 3 and all(m > 0 for m in ms)
    assert ms[1] > max(ms[0], ms[2])  # the wide model's figure sits at its own index
