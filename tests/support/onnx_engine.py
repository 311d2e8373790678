"""The tests' engine lives in the package so `edgecut bench fleet` can use it too."""

from edgecut.server.bench.onnx_engine import TASKS, OnnxTestEngine

__all__ = ["TASKS", "OnnxTestEngine"]
