"""The simulated devices: each a device class (the server's budget row) and the tasks its user wants."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceProfile:
    device_id: str
    device_class: str  # a row of the server's budget table (budget_policy.DEFAULT_CLASSES)
    tasks: tuple[str, ...]
    hardware: str  # what the profile stands for, for the log


BASE_PROFILES: tuple[DeviceProfile, ...] = (
    DeviceProfile("rpi4-kitchen", "rpi4", ("seg", "depth"), "Raspberry Pi 4 class: 30 % of the MACs"),
    DeviceProfile(
        "jetson-door", "jetson-nano", ("seg", "depth", "normals"), "Jetson Nano class: 50 % of the MACs"
    ),
    DeviceProfile("x86-lab", "x86", ("count", "edges"), "x86 mini PC: 80 % of the MACs"),
    # Same class and tasks as rpi4-kitchen, so the same build key: it joins late and hits the cache.
    DeviceProfile("rpi4-garage", "rpi4", ("seg", "depth"), "Raspberry Pi 4 class: 30 % of the MACs"),
)

# What the first device's user switches to mid-run (a set no device asked for: a real new build).
CHANGED_TASKS: tuple[str, ...] = ("seg", "depth", "edges")


def fleet(n: int) -> list[DeviceProfile]:
    """`n` devices cycling through the base profiles; repeats get a numeric suffix."""
    if n < 1:
        raise ValueError("a fleet needs at least one device")
    out = []
    for i in range(n):
        p = BASE_PROFILES[i % len(BASE_PROFILES)]
        rnd = i // len(BASE_PROFILES)
        out.append(
            p if rnd == 0 else DeviceProfile(f"{p.device_id}-{rnd + 1}", p.device_class, p.tasks, p.hardware)
        )
    return out


def waves(devices: list[DeviceProfile]) -> tuple[list[DeviceProfile], list[DeviceProfile]]:
    """First the devices with a need nobody had before them, then those repeating one (cache hits)."""
    seen: set[tuple[str, tuple[str, ...]]] = set()
    first: list[DeviceProfile] = []
    later: list[DeviceProfile] = []
    for d in devices:
        need = (d.device_class, tuple(sorted(d.tasks)))
        (later if need in seen else first).append(d)
        seen.add(need)
    return first, later
