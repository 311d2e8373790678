"""The device side: runs tailored models with onnxruntime. Imports no torch, ever."""
