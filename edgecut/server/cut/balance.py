"""No task left behind: Δm is a mean, but a device's user feels the worst task.

After a build, each kept task is compared with the full model (`task_change`, the Δm metrics of its
kind). When one task falls more than `share` below the full model while another stays within it, the
channel ranking starved that task: its fusion weight is raised (in proportion to its shortfall) and
the model is rebuilt once (the engine does so only for a build no refinement follows: a quick model's
lag is mostly too little recovery). The rebuild is kept when its worst task is better; a task still
more than `share` below is reported on the artifact as a trade-off. When every task is far below (a budget too
tight for all), rebalancing cannot help and nothing is rebuilt.

Torch-free: the build is a callable, so the rule is tested without training anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from edgecut.server.mtl.metric_names import DELTA_M_METRICS, task_change

DEFAULT_SHARE = 0.05  # a task more than 5 % below the full model is left behind
MAX_BOOST = 4.0  # a lagging task's weight grows by at most this factor per rebuild

T = TypeVar("T")


def task_changes(
    metrics: Mapping[str, Mapping[str, float]],
    reference: Mapping[str, Mapping[str, float]],
    kinds: Mapping[str, str],
) -> dict[str, float]:
    """Each task's relative change against the full model (a fraction; negative = worse)."""
    out: dict[str, float] = {}
    for task, values in metrics.items():
        if task not in reference:
            continue
        change = task_change(values, reference[task], DELTA_M_METRICS.get(kinds.get(task, ""), None))
        if change is not None:
            out[task] = change
    return out


def left_behind(changes: Mapping[str, float], share: float = DEFAULT_SHARE) -> list[str]:
    """Tasks more than `share` below the full model, worst first (whatever the others do)."""
    return sorted((t for t, c in changes.items() if c < -share), key=lambda t: changes[t])


def starved(changes: Mapping[str, float], share: float = DEFAULT_SHARE) -> list[str]:
    """The tasks a rebalance should help: left behind while at least one other task stays near."""
    behind = left_behind(changes, share)
    return behind if behind and len(behind) < len(changes) else []


def rebalanced(
    weights: Mapping[str, float], changes: Mapping[str, float], tasks: list[str], share: float
) -> dict[str, float]:
    """Weights with each starved task's raised by 1 + its shortfall in shares (at most MAX_BOOST)."""
    out = {t: float(weights.get(t, 1.0)) for t in changes}
    out.update({t: float(w) for t, w in weights.items()})
    for t in tasks:
        out[t] = out.get(t, 1.0) * min(MAX_BOOST, 1.0 + (-changes[t]) / max(share, 1e-9))
    return out


def trade_off(changes: Mapping[str, float], share: float) -> str:
    """One sentence for the artifact when a task is still left behind ("" when none is)."""
    behind = left_behind(changes, share)
    if not behind:
        return ""
    worst = ", ".join(f"{t} {100 * changes[t]:+.1f} %" for t in behind)
    near = [t for t in changes if t not in behind]
    rest = (
        f" while {', '.join(near)} {'stays' if len(near) == 1 else 'stay'} within {100 * share:g} %"
        if near
        else ""
    )
    return f"{worst} against the full model{rest} at this budget"


@dataclass
class Balanced(Generic[T]):
    """The build kept, its per-task changes, the fusion weights it used and whether it was rebuilt."""

    build: T
    changes: dict[str, float]
    weights: dict[str, float]
    rebuilt: bool
    trade_off: str


def leave_no_task_behind(
    build: Callable[[dict[str, float]], T],
    changes_of: Callable[[T], dict[str, float]],
    weights: Mapping[str, float],
    share: float = DEFAULT_SHARE,
    rebuild: bool = True,
) -> Balanced[T]:
    """Build with `weights`; if a task is starved, rebuild once with it weighted up; keep the build
    whose worst task is better (ties keep the first). With `rebuild=False` the first build is kept and a
    lagging task is only reported."""
    first_w = dict(weights)
    first = build(first_w)
    changes = changes_of(first)
    lagging = starved(changes, share)
    if not lagging or not rebuild:
        return Balanced(first, changes, first_w, False, trade_off(changes, share))
    second_w = rebalanced(first_w, changes, lagging, share)
    second = build(second_w)
    changes2 = changes_of(second)
    if min(changes2.values(), default=0.0) > min(changes.values(), default=0.0):
        return Balanced(second, changes2, second_w, True, trade_off(changes2, share))
    return Balanced(first, changes, first_w, True, trade_off(changes, share))
