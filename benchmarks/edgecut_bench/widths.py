"""`edgecut bench widths`: what a layer's width costs on this CPU, in fp32 and in static INT8.

The pruner keeps layer widths in steps (edgecut/server/cut/groups.py, ROUND_TO). Whether a step pays
depends on the CPU's kernels: on this project's x86 machine INT8 ran 8 and 12 channels slower than 16.
This bench times a chain of four 3x3 convolutions (a residual stage's shape) at each width, as an
onnxruntime session would run it, so the step can be checked on another device (run it on a Pi).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgecut_bench.machine import cpu_name

if TYPE_CHECKING:
    from torch import nn

SECTION = "Layer widths: what a channel step buys"


@dataclass
class WidthRow:
    width: int
    mmacs: float
    fp32_ms: float
    int8_ms: float


@dataclass
class WidthsResult:
    size: int
    in_channels: int
    rounds: int
    runs: int
    machine: str
    rows: list[WidthRow] = field(default_factory=list)
    command: str = ""
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at the start and at the end


def _chain(cin: int, width: int) -> nn.Module:
    from torch import nn

    layers: list[nn.Module] = []
    for i in range(4):
        layers += [nn.Conv2d(cin if i == 0 else width, width, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers).eval()


def _files(cin: int, width: int, size: int, folder: Path) -> tuple[Path, Path]:
    """The chain as an fp32 ONNX file and as onnxruntime's static INT8 (QDQ, per-channel, U8S8)."""
    import numpy as np
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32, pre, int8 = (folder / f"w{width}{s}.onnx" for s in ("", ".pre", ".int8"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _chain(cin, width), (torch.rand(1, cin, size, size),), str(fp32), input_names=["x"], dynamo=False
        )
    quant_pre_process(str(fp32), str(pre))
    rng = np.random.default_rng(0)
    draws = [{"x": rng.random((1, cin, size, size), dtype=np.float32)} for _ in range(8)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(draws)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    quantize_static(
        str(pre),
        str(int8),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return fp32, int8


def run(
    widths: list[int],
    size: int = 32,
    in_channels: int = 24,
    rounds: int = 7,
    runs: int = 40,
    progress: Callable[[str], None] = print,
) -> WidthsResult:
    """Time every width's fp32 and INT8 chain in turns (one thread, batch 1): median of round medians."""
    import numpy as np
    import onnxruntime as ort

    machine = f"{platform.machine()}, {os.cpu_count()} cores, {cpu_name()}; onnxruntime {ort.__version__}"
    res = WidthsResult(size, in_channels, rounds, runs, machine)
    start_load = os.getloadavg()[0]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    x = {"x": np.random.default_rng(1).random((1, in_channels, size, size), dtype=np.float32)}
    with tempfile.TemporaryDirectory(prefix="edgecut-widths-") as d:
        sessions = {}
        for i, w in enumerate(widths):
            progress(f"bench widths: {i + 1}/{len(widths)} quantising width {w}")
            for kind, path in zip(("fp32", "int8"), _files(in_channels, w, size, Path(d)), strict=True):
                sessions[w, kind] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        times: dict[tuple[int, str], list[float]] = {k: [] for k in sessions}
        for r in range(rounds):
            progress(f"bench widths: timing round {r + 1}/{rounds}")
            for k, s in sessions.items():
                for _ in range(5):
                    s.run(None, x)
                t0 = time.perf_counter()
                for _ in range(runs):
                    s.run(None, x)
                times[k].append((time.perf_counter() - t0) / runs * 1e3)
    for w in widths:
        mmacs = (in_channels * w + 3 * w * w) * 9 * size * size / 1e6
        res.rows.append(
            WidthRow(w, mmacs, float(np.median(times[w, "fp32"])), float(np.median(times[w, "int8"])))
        )
    res.load = (start_load, os.getloadavg()[0])
    return res


def slower_than_wider(res: WidthsResult, kind: str) -> list[int]:
    """Widths that ran slower than a wider one: pruning down to them costs time instead of saving it."""
    ms = {r.width: (r.fp32_ms if kind == "fp32" else r.int8_ms) for r in res.rows}
    return [w for w in ms if any(v > w and ms[v] < ms[w] for v in ms)]


def markdown(res: WidthsResult) -> str:
    lines = [
        "What one layer width costs on this CPU: a chain of four 3x3 convolutions (a residual stage: "
        f"{res.in_channels} channels in, then `width` wide) at {res.size} x {res.size}, exported to ONNX and "
        "quantised as the engine does (static INT8, QDQ, per-channel weights, unsigned activations), timed "
        f"in turns in one process (batch 1, 1 thread, {res.rounds} rounds of {res.runs} runs, median of the "
        "round medians). The engine keeps pruned widths in steps of 16 (`ROUND_TO` in "
        "edgecut/server/cut/groups.py) because of what this table shows on this machine.",
        "",
        f"Machine: {res.machine}; load average {res.load[0]:.1f} at the start, {res.load[1]:.1f} at the end "
        "(timing in turns keeps the widths comparable on a busy machine, not their absolute times). "
        f"Rerun: `{res.command or 'edgecut bench widths'}`; on a device, run the same command there to "
        "see its own steps.",
        "",
        "| width | MMACs | fp32 ms | INT8 ms | INT8 µs per MMAC |",
        "|---:|---:|---:|---:|---:|",
        *(
            f"| {r.width} | {r.mmacs:.2f} | {r.fp32_ms:.3f} | {r.int8_ms:.3f} | {1e3 * r.int8_ms / r.mmacs:.1f} |"
            for r in res.rows
        ),
        "",
    ]
    for kind in ("int8", "fp32"):
        slow = slower_than_wider(res, kind)
        name = "INT8" if kind == "int8" else "fp32"
        lines.append(
            f"- {name}: "
            + (
                f"{'widths' if len(slow) > 1 else 'width'} {', '.join(map(str, slow))} ran slower than a "
                "wider layer: pruning down to them loses time."
                if slow
                else "no width ran slower than a wider one."
            )
        )
    return "\n".join(lines) + "\n"
