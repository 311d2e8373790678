"""onnxruntime execution providers: which to ask for, and the fallback chain when one fails.

`providers:` in agent.yaml is `auto` or an ordered list (full names or short ones: `tensorrt`, `cuda`,
`cpu`). `auto` takes what this onnxruntime build offers, in its own priority order (TensorRT before
CUDA before CPU on a Jetson build), leaving out the Azure provider (remote inference, not this device).
A provider this build lacks is dropped with one warning; the CPU provider always ends the list, since it
is what the agent falls back to when another provider fails (runtime.load_model).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import onnxruntime as ort

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
AUTO = "auto"
_NOT_LOCAL = {"AzureExecutionProvider"}  # sends the model to a cloud endpoint: never chosen by `auto`


def canonical(name: str) -> str:
    """`cuda` / `CUDA` / `CUDAExecutionProvider` -> `CUDAExecutionProvider`; ValueError for an unknown name."""
    known = ort.get_all_providers()
    for full in known:
        if name.strip().lower() in (full.lower(), full.removesuffix("ExecutionProvider").lower()):
            return full
    short = ", ".join(p.removesuffix("ExecutionProvider").lower() for p in known)
    raise ValueError(f"{name!r} is no onnxruntime execution provider (known: {short})")


def resolve(wanted: str | Sequence[str]) -> list[str]:
    """The providers to ask onnxruntime for, best first, ending with the CPU provider."""
    available = ort.get_available_providers()
    if isinstance(wanted, str):  # only "auto" passes the settings' validation
        chosen = [p for p in available if p not in _NOT_LOCAL]
    else:
        chosen = []
        for name in wanted:
            if name not in available:
                logger.warning(
                    "execution provider %s is not in this onnxruntime build (it has %s): skipped",
                    name,
                    ", ".join(available),
                )
            elif name not in chosen:
                chosen.append(name)
    return [p for p in chosen if p != CPU] + [CPU]


def fallbacks(providers: Sequence[str]) -> list[list[str]]:
    """The lists to try in turn when the first fails: drop the best provider each time, CPU last."""
    chain = [list(providers[i:]) for i in range(len(providers)) if providers[i] != CPU]
    return [*chain, [CPU]]
