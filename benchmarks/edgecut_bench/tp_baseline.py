"""What a user would pick instead of edgecut: Torch-Pruning used the way its README shows.

`torch_pruning.pruner.MetaPruner` with `GroupMagnitudeImportance` or `GroupTaylorImportance`, global
pruning, on the decomposed model (the selected tasks' heads and the trunk they read), stepped
iteratively until the model fits the MACs budget (MACs counted with prune.measure, like every row).
Taylor needs gradients before each step: the README's recipe computes a loss and calls backward; here
the loss is the selected tasks' labelled loss on one calibration batch per step (a user pruning their
own model has its labels). The heads' output layers are ignored (their size is the task's contract),
as the README ignores a classifier's last layer.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Literal

import torch
import torch_pruning as tp
from torch.utils.data import Dataset

from edgecut.server.cut.prune import Size, measure
from edgecut.server.errors import ImpossibleBudgetError
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.data import Batch, batches
from edgecut.server.mtl.losses import total_loss

Criterion = Literal["magnitude", "taylor"]
IMPORTANCES: dict[Criterion, Callable[[], tp.importance.Importance]] = {
    "magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "taylor": lambda: tp.importance.GroupTaylorImportance(),
}


def tp_prune(
    decomposed: MultiTaskModel,
    criterion: Criterion,
    max_macs: int,
    data: Dataset[Batch],
    steps: int = 100,
    pruning_ratio: float = 0.9,
    max_pruning_ratio: float = 0.95,
    batch_size: int = 32,
) -> tuple[MultiTaskModel, Size]:
    """A pruned copy of `decomposed` within `max_macs`, and its size.

    `pruning_ratio` over `steps` iterative steps means each step removes ~`pruning_ratio / steps` of
    the channels (globally ranked), so the model stops within one small step of the budget.
    `max_pruning_ratio` keeps every layer above 5 % of its width (as edgecut's own floor does).
    """
    model = copy.deepcopy(decomposed).eval()
    size = model.input_size
    pruner = tp.pruner.MetaPruner(
        model,
        example_inputs=torch.rand(1, 3, size, size),
        importance=IMPORTANCES[criterion](),
        global_pruning=True,
        pruning_ratio=pruning_ratio,
        max_pruning_ratio=max_pruning_ratio,
        iterative_steps=steps,
        ignored_layers=model.output_layers(),
        output_transform=lambda out: list(out.values()),
    )
    feed = itertools.cycle(list(itertools.islice(batches(data, batch_size), 4)))
    current = measure(model, size)
    for _ in range(steps):
        if current.macs <= max_macs:
            break
        if criterion == "taylor":
            model.zero_grad(set_to_none=True)
            batch = next(feed)
            loss, _ = total_loss(model.task_specs, model(batch["image"]), batch)
            loss.backward()
        pruner.step()
        current = measure(model, size)
    model.zero_grad(set_to_none=True)
    if current.macs > max_macs:
        raise ImpossibleBudgetError(
            f"Torch-Pruning ({criterion}) stopped at {current.macs / 1e6:.3f} MMACs, above the budget of "
            f"{max_macs / 1e6:.3f}: raise pruning_ratio or steps"
        )
    return model.eval(), current
