"""The simulated devices: each a device class (the server's budget row) and the tasks its user wants."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class DeviceProfile:
    device_id: str
    device_class: str  # a row of the server's budget table (budget_policy.DEFAULT_CLASSES)
    tasks: tuple[str, ...]
    hardware: str  # what the profile stands for, for the log
    changes_to: tuple[str, ...]  # the tasks its user switches to when it is the device changed mid-run
    # issue 31: `adapt: on` in its agent.yaml, and the covariate shift its camera adds to every image
    # (edgecut/server/mtl/shifts.py; "" = none)
    adapt: bool = False
    shift: str = ""


_RPI4, _JETSON, _X86 = (
    "Raspberry Pi 4 class: 30 % of the MACs",
    "Jetson Nano class: 50 % of the MACs",
    "x86 mini PC: 80 % of the MACs",
)
# Each `changes_to` is a task set no device asked for, so the change needs a real new build.
BASE_PROFILES: tuple[DeviceProfile, ...] = (
    DeviceProfile("rpi4-kitchen", "rpi4", ("seg", "depth"), _RPI4, ("depth", "normals")),
    DeviceProfile("jetson-door", "jetson-nano", ("seg", "depth", "normals"), _JETSON, ("seg", "depth")),
    DeviceProfile("x86-lab", "x86", ("count", "edges"), _X86, ("count", "edges", "seg")),
    # Same class and tasks as rpi4-kitchen, so the same build key: it joins late and hits the cache.
    DeviceProfile("rpi4-garage", "rpi4", ("seg", "depth"), _RPI4, ("depth", "normals")),
)


# Issue 31: same class and tasks as rpi4-kitchen (one build key), but its camera sees 40 % of the light;
# with `adapt: on` it sends statistics summaries and gets a model adapted to them.
DIM_GARAGE = DeviceProfile(
    "rpi4-dim-garage",
    "rpi4",
    ("seg", "depth"),
    "Raspberry Pi 4 class in a dim garage (its camera sees 40 % of the light); adapt: on",
    ("depth", "normals"),
    adapt=True,
    shift="dark",
)


def fleet(n: int) -> list[DeviceProfile]:
    """`n` devices cycling through the base profiles; repeats get a numeric suffix."""
    if n < 1:
        raise ValueError("a fleet needs at least one device")
    out = []
    for i in range(n):
        p = BASE_PROFILES[i % len(BASE_PROFILES)]
        rnd = i // len(BASE_PROFILES)
        out.append(p if rnd == 0 else replace(p, device_id=f"{p.device_id}-{rnd + 1}"))
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


def changed_device(first_wave: list[DeviceProfile]) -> DeviceProfile:
    """The device whose user changes tasks mid-run: the last of the first wave (x86-lab from 3 devices on).

    Its budget is the largest, so the new model keeps quality close to the full model's for every task.
    """
    return first_wave[-1]
