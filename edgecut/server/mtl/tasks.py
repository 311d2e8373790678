"""Task specifications: what each task predicts, how it is trained and how it is scored."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

TaskKind = Literal["segmentation", "classification", "depth", "regression", "normals", "edges"]
DENSE_KINDS = frozenset({"segmentation", "depth", "regression", "normals", "edges"})
KINDS: tuple[str, ...] = get_args(TaskKind)


@dataclass(frozen=True)
class TaskSpec:
    """One task of a multi-task model.

    `channels` is the head's output channels: classes for segmentation/classification, 1 for depth
    and edges (a logit), 3 for normals, any number for a dense regression.

    Kinds: segmentation (per-pixel classes), classification (one class per image), depth (positive
    values, 0 = no measurement), regression (dense real values, every one of them a measurement, 0
    included), normals (unit vectors, all-zero = no measurement), edges (0/1 per pixel, a logit out).
    """

    name: str
    kind: TaskKind
    channels: int
    classes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def dense(self) -> bool:
        return self.kind in DENSE_KINDS


SEG_CLASSES = ("floor", "wall", "sphere", "box", "cylinder", "cone")
COUNT_CLASSES = ("1", "2", "3", "4", "5")

# The tasks of the synthetic scenes (and of the NYUv2-style folder loader's default layout).
SCENE_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("seg", "segmentation", len(SEG_CLASSES), SEG_CLASSES),
    TaskSpec("depth", "depth", 1),
    TaskSpec("normals", "normals", 3),
    TaskSpec("edges", "edges", 1),
    TaskSpec("count", "classification", len(COUNT_CLASSES), COUNT_CLASSES),
)


def by_name(specs: tuple[TaskSpec, ...] | list[TaskSpec]) -> dict[str, TaskSpec]:
    return {s.name: s for s in specs}
