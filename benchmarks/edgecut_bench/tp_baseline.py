"""What a user would pick instead of edgecut: Torch-Pruning used the way its authors show it.

What Torch-Pruning's README (v1.6) shows, and what is taken from it here:
- the pruner call: `tp.pruner.BasePruner` (`MetaPruner` is the same class) with
  `importance=tp.importance.GroupMagnitudeImportance(p=2)`, `pruning_ratio=...`, `ignored_layers=[the final
  classifier]` and `round_to=8` ("round dims/channels to 4x or 8x for acceleration"); `global_pruning` is
  left at its default, False: **local pruning**, every layer loses the same share of its channels;
- importance defaults: `GroupMagnitudeImportance(p=2)` and `GroupTaylorImportance()` reduce a group's
  scores with `group_reduction="mean"` and divide them by their mean (`normalizer="mean"`); used as is;
- Taylor needs gradients before each step (the README's recipe: compute a loss, `backward()`): here the
  selected tasks' labelled loss on one calibration batch per step (a user pruning their own model has
  its labels);
- the README's "Global Pruning and Isomorphic Pruning" section offers `global_pruning=True` together
  with `isomorphic=True` ("to improve global ranking"), shown with the same pruner call: the third
  variant here, with the README's magnitude importance.
The heads' output layers are ignored (their size is the task's contract), as the README ignores the
classifier.

Meeting a MACs budget: the README prunes by a channel ratio. To hit a target, the authors' own
reproduce/main.py (`progressive_pruning`) sets `pruning_ratio=1.0` spread over `iterative_steps` and calls
`pruner.step()` until the measured speed-up reaches the target; the same here with 100 steps (each step
about 1 % of every layer's channels, local; 1 % of all channels, global), stopping at the first step
whose MACs (prune.measure, like every row) are within the budget. `max_pruning_ratio=0.95` keeps every
layer above 5 % of its width (as edgecut's own floor does). With `round_to=8` a layer that loses channels
keeps a multiple of 8 of them, so the model can land a little below the budget.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch.utils.data import Dataset

from edgecut.server.cut.prune import Size, measure
from edgecut.server.errors import ImpossibleBudgetError
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.data import Batch, batches
from edgecut.server.mtl.losses import total_loss

ROUND_TO = 8  # the README's pruner call


@dataclass(frozen=True)
class Variant:
    """One way of calling Torch-Pruning's pruner (README settings only)."""

    name: str
    importance: Callable[[], tp.importance.Importance]
    global_pruning: bool = False
    isomorphic: bool = False
    gradients: bool = False  # the importance reads gradients: a loss and backward() before each step

    @property
    def about(self) -> str:
        imp = type(self.importance()).__name__
        scope = "global_pruning=True, isomorphic=True" if self.global_pruning else "local"
        return f"{imp}, {scope}, round_to={ROUND_TO}"


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("magnitude", lambda: tp.importance.GroupMagnitudeImportance(p=2)),
        Variant("taylor", lambda: tp.importance.GroupTaylorImportance(), gradients=True),
        Variant(
            "isomorphic",
            lambda: tp.importance.GroupMagnitudeImportance(p=2),
            global_pruning=True,
            isomorphic=True,
        ),
    )
}


def pruner_for(
    model: MultiTaskModel, variant: Variant, steps: int, max_pruning_ratio: float = 0.95
) -> tp.pruner.BasePruner:
    """The README's pruner for `model`, `pruning_ratio=1.0` over `steps` iterative steps (reproduce/main.py)."""
    size = model.input_size
    return tp.pruner.BasePruner(
        model,
        example_inputs=torch.rand(1, 3, size, size),
        importance=variant.importance(),
        global_pruning=variant.global_pruning,
        isomorphic=variant.isomorphic,
        pruning_ratio=1.0,
        max_pruning_ratio=max_pruning_ratio,
        iterative_steps=steps,
        round_to=ROUND_TO,
        ignored_layers=model.output_layers(),
        output_transform=lambda out: list(out.values()),
    )


def tp_prune(
    decomposed: MultiTaskModel,
    variant: str,
    max_macs: int,
    data: Dataset[Batch],
    steps: int = 100,
    max_pruning_ratio: float = 0.95,
    batch_size: int = 32,
) -> tuple[MultiTaskModel, Size]:
    """A pruned copy of `decomposed` within `max_macs`, and its size (the original is left as it was)."""
    how = VARIANTS[variant]
    model = copy.deepcopy(decomposed).eval()
    size = model.input_size
    pruner = pruner_for(model, how, steps, max_pruning_ratio)
    feed = itertools.cycle(list(itertools.islice(batches(data, batch_size), 4)))
    current = measure(model, size)
    for _ in range(steps):
        if current.macs <= max_macs:
            break
        if how.gradients:
            model.zero_grad(set_to_none=True)
            batch = next(feed)
            loss, _ = total_loss(model.task_specs, model(batch["image"]), batch)
            loss.backward()
        pruner.step()
        current = measure(model, size)
    model.zero_grad(set_to_none=True)
    if current.macs > max_macs:
        raise ImpossibleBudgetError(
            f"Torch-Pruning ({variant}) stopped at {current.macs / 1e6:.3f} MMACs, above the budget of "
            f"{max_macs / 1e6:.3f}: every layer is at its largest pruning ratio ({max_pruning_ratio:g})"
        )
    return model.eval(), current
