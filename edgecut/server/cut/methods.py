"""Named pruning methods = (criterion, fusion, scoring target): edgecut's CUT and the baselines it is
compared with on the same model, data and budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The scoring target and order (see objective.py); spelled here so the CLI can list methods without torch.
Target = Literal["distill", "labels"]
Order = Literal["first", "second"]


@dataclass(frozen=True)
class Method:
    name: str
    criterion: str
    fusion: str
    target: Target
    about: str
    min_channels: int = 1  # channel pruning keeps at least this many filters per layer


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("random", "random", "mean", "labels", "random channels (seeded)"),
        Method("l1", "l1", "mean", "labels", "L1 magnitude of each channel's weights"),
        Method(
            "garg-taylor",
            "garg-taylor",
            "mean",
            "labels",
            "Garg et al.'s single-task criterion: (g dL/dg)^2 on channel gates, L = sum of task losses",
        ),
        Method(
            "cosprune",
            "cosprune",
            "mean",
            "labels",
            "Garg et al.'s CosPrune: lowest task-gradient agreement first, at least 5 filters per layer",
            min_channels=5,
        ),
        Method(
            "disparse",
            "snip",
            "union",
            "labels",
            "DiSparse: per-task |w dL_t/dw|, prune only what every task prunes",
        ),
        Method(
            "cut-vote",
            "taylor",
            "vote",
            "distill",
            "CUT scoring per task (label-free), CUT's vote fusion (v = min(2, tasks))",
        ),
        Method(
            "cut-mean",
            "taylor",
            "mean",
            "distill",
            "CUT scoring per task (label-free), mean of normalised scores",
        ),
        Method("cut-union", "taylor", "union", "distill", "CUT scoring per task (label-free), union fusion"),
        Method(
            "cut-labels", "taylor", "vote", "labels", "CUT scoring per task with labelled losses, vote fusion"
        ),
    )
}
DEFAULT_METHOD = "cut-vote"

# The CUT paper's unstructured comparison: criteria from masks.ELEMENT_CRITERIA, fusion from
# masks.ELEMENT_FUSIONS ("global" = a task-agnostic score, one top-k over the whole model).
MASK_METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("random", "random", "global", "labels", "random weights (seeded)"),
        Method("magnitude", "magnitude", "global", "labels", "one-shot global |w| (LTH-style)"),
        Method("snip-init", "snip-init", "global", "labels", "SNIP at a fresh init, summed loss"),
        Method("disparse", "snip", "union", "labels", "DiSparse: per-task |w dL_t/dw|, union of the keeps"),
        Method("cut", "snip", "vote", "labels", "CUT: per-task |w dL_t/dw|, vote v = min(2, tasks)"),
        Method("cut-distill", "snip", "vote", "distill", "CUT scores on the label-free distillation loss"),
    )
}
