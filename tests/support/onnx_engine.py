"""The tests' engine lives in the package so `edgecut bench fleet` can use it too."""

from edgecut.server.bench.onnx_engine import SIZE, TASKS, OnnxTestEngine

__all__ = ["SIZE", "TASKS", "OnnxTestEngine"]
