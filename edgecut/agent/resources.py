"""What this device can spend on inference: psutil + platform, and onnxruntime's providers."""

from __future__ import annotations

import platform
from pathlib import Path

import psutil

from edgecut.v1 import fleet_pb2

_DT_MODEL = Path("/proc/device-tree/model")


def device_class(arch: str, model_text: str) -> str:
    """A coarse label from the device-tree model string (Jetson, Raspberry Pi) or the architecture."""
    text = model_text.lower()
    if "jetson" in text or "nvidia" in text:
        return "jetson-" + ("orin" if "orin" in text else "xavier" if "xavier" in text else "nano")
    if "raspberry pi" in text:
        for gen in ("5", "4", "3"):
            if f"raspberry pi {gen}" in text or f"compute module {gen}" in text:
                return f"rpi{gen}"
        return "rpi"
    return {"x86_64": "x86", "amd64": "x86"}.get(arch.lower(), arch.lower())


def _device_tree_model() -> str:
    try:
        return _DT_MODEL.read_text(errors="replace").rstrip("\x00\n")
    except OSError:
        return ""


def probe(disk_path: Path | str = "/", providers: list[str] | None = None) -> fleet_pb2.Resources:
    """One snapshot of the device's resources (takes a few milliseconds).

    `providers`: the execution providers the agent runs on (default: all this onnxruntime build has).
    """
    import onnxruntime  # imported here: the probe is the only user outside runtime.py

    freq = 0.0
    try:
        f = psutil.cpu_freq()
        freq = float(f.max or f.current) if f else 0.0
    except (OSError, NotImplementedError):
        pass  # some ARM kernels expose no cpufreq
    mem = psutil.virtual_memory()
    try:
        disk_free = psutil.disk_usage(str(disk_path)).free
    except OSError:
        disk_free = 0
    arch = platform.machine()
    return fleet_pb2.Resources(
        cpu_count=psutil.cpu_count(logical=True) or 1,
        cpu_freq_mhz=freq,
        arch=arch,
        ram_total_bytes=mem.total,
        ram_available_bytes=mem.available,
        ort_providers=onnxruntime.get_available_providers() if providers is None else providers,
        disk_free_bytes=disk_free,
        device_class=device_class(arch, _device_tree_model()),
        os=f"{platform.system()} {platform.release()}",
    )
