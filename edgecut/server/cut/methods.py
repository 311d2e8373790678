"""Named pruning methods = (criterion, fusion, scoring target): edgecut's CUT and the baselines it is
compared with on the same model, data and budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The scoring target and order (see objective.py); spelled here so the CLI can list methods without torch.
Target = Literal["distill", "labels"]
Order = Literal["first", "second"]
# How a mask method sets its per-task keep ratio: "matched" = chosen so the fused mask hits the target
# sparsity; "papers" = the CUT/DiSparse code's NYUv2 keep table (masks.PAPERS_KEEP_NYUV2), sparsity as it falls.
Protocol = Literal["matched", "papers"]


@dataclass(frozen=True)
class Method:
    """A named pruning method (`edgecut prune --method NAME`): how channels are scored and fused."""

    name: str
    criterion: str
    fusion: str
    target: Target
    about: str
    min_channels: int = 1  # channel pruning keeps at least this many filters per layer
    order: Order | None = None  # None: the target's own (objective.py)
    protocol: Protocol = "matched"


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
            "snip-union",
            "snip",
            "union",
            "labels",
            "SNIP at the trained weights with DiSparse's union: prune only what every task prunes (not "
            "DiSparse itself, whose pre-trained recipe scores |dL_t/dw| w^2: disparse-pt)",
        ),
        Method(
            "disparse-pt",
            "disparse-pt",
            "union",
            "labels",
            "DiSparse's own pre-trained recipe: per task, the summed |dL_t/dw| times w^2, union of the keeps",
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
        Method(
            "snip-union",
            "snip",
            "union",
            "labels",
            "per-task |w dL_t/dw| at the trained weights, union of the keeps (ESCM's commented-out branch)",
        ),
        Method(
            "disparse-pt",
            "disparse-pt",
            "union",
            "labels",
            "DiSparse's pre-trained recipe: per-task sum |dL_t/dw| times w^2, union of the keeps",
        ),
        Method("cut", "snip", "vote", "labels", "CUT: per-task |w dL_t/dw|, vote v = min(2, tasks)"),
        Method(
            "cut-papers-keep",
            "snip",
            "vote",
            "labels",
            "CUT with the papers' NYUv2 keep table per task; the sparsity falls where the vote puts it",
            protocol="papers",
        ),
        Method(
            "cut-distill",
            "snip",
            "vote",
            "distill",
            "CUT's vote on label-free scores, second order: mean (w d(r.f)/dw)^2 (edgecut's own)",
        ),
        Method(
            "cut-distill-fo",
            "snip",
            "vote",
            "distill",
            "CUT's vote on label-free scores, first order: mean |w d(r.f)/dw|, the same order as CUT's",
            order="first",
        ),
    )
}
