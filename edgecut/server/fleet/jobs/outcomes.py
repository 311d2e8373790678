"""What a build tells whoever waits for it: `Progress`, then exactly one `Ready` or `Failed`.

Shared by the job manager, the refiner, the rollout and the adapters (link/) that pass them on to
devices; `Interrupted` is how a running build is stopped from inside its progress callback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgecut.server.fleet.events import FleetEvent
from edgecut.server.fleet.state.store import StoredArtifact


@dataclass(frozen=True)
class Progress:
    build_key: str
    stage: str  # queued, importance, pruning, recovery, exporting
    fraction: float
    detail: str = ""


@dataclass(frozen=True)
class Ready:
    build_key: str
    artifact: StoredArtifact
    cache_hit: bool = False
    parent_artifact_id: str = ""  # set by progressive refinement: the artifact this one refines
    refinement: int = 0
    # why devices are not offered it yet ("" = offer it): below the quick model's quality floor while
    # a refinement may still replace it (quality_floor.py)
    held: str = ""
    # a model adapted to the receiving device's statistics (issue 31): the sequence of the device's
    # summary that chose it (signed as Manifest.adapted_from_sequence); 0 = not adapted
    adapted_from_sequence: int = 0


@dataclass(frozen=True)
class Failed:
    build_key: str
    code: str  # an edgecut.v1.Error.Code name
    message: str


Event = Progress | Ready | Failed
Outcome = Ready | Failed
Listener = Callable[[Event], None]
FinishHook = Callable[[Outcome], None]
RefinedHook = Callable[[Ready], None]  # a refinement the key's cache now serves (refinement >= 1)


class Interrupted(BaseException):
    """Raised inside a build's progress callback when the server stops or lost the job's lease.

    A BaseException (like KeyboardInterrupt) so an engine's `except Exception` cannot turn a
    shutdown into a failed build: the job must stay resumable.
    """


def job_event(key: str, stage: str, fraction: float, **data: Any) -> FleetEvent:
    """The fleet event for a build's stage (events.py's `job` kind)."""
    return FleetEvent("job", data={"build_key": key, "stage": stage, "fraction": fraction, **data})
