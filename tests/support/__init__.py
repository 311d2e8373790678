"""Shared test helpers: a real fleet server in-process, small real ONNX models and engine, fault injectors."""
