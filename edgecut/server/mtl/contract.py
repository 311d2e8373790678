"""The multi-task model contract, and a registry so users can plug in their own model classes.

A multi-task model is a `MultiTaskModel`: a shared `trunk` turning the normalised image into a tuple
of feature maps, and one head per task in `heads` (a ModuleDict) turning those features into the
task's output. `forward(x)` takes an image batch in [0, 1] and returns {task: tensor}. The input
normalisation lives inside the model, so an exported ONNX file takes plain [0, 1] RGB.

Every part the engine touches goes through this contract: decomposition keeps a subset of `heads`,
importance hooks the trunk and heads, pruning keeps each head's output layer whole.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from edgecut.server.errors import ModelContractError, UnknownTaskError
from edgecut.server.mtl.tasks import TaskSpec

_REGISTRY: dict[str, type[MultiTaskModel]] = {}


class MultiTaskModel(nn.Module):
    """Base class; subclasses set `self.trunk` and `self.heads` and implement `config()`."""

    arch: str = ""
    trunk: nn.Module
    heads: nn.ModuleDict
    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        input_size: int,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.25, 0.25, 0.25),
    ) -> None:
        super().__init__()
        self.task_specs: dict[str, TaskSpec] = {t.name: t for t in tasks}
        self.input_size = int(input_size)
        self.register_buffer("pixel_mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))

    @property
    def task_names(self) -> list[str]:
        return list(self.heads.keys())

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.trunk((x - self.pixel_mean) / self.pixel_std)
        return tuple(feats) if isinstance(feats, (tuple, list)) else (feats,)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.features(x)
        return {name: head(feats) for name, head in self.heads.items()}

    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this architecture (before any pruning)."""
        raise NotImplementedError

    def output_layers(self) -> list[nn.Module]:
        """The last layer of each head: pruning must never change their output channels."""
        layers: list[nn.Module] = []
        for head in self.heads.values():
            last = [m for m in head.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
            if last:
                layers.append(last[-1])
        return layers

    def select(self, tasks: Sequence[str]) -> MultiTaskModel:
        """A deep copy keeping only `tasks`' heads (decomposition); the trunk is shared by all."""
        unknown = [t for t in tasks if t not in self.heads]
        if unknown:
            raise UnknownTaskError(
                f"unknown task {unknown[0]!r}: this model knows {', '.join(self.task_names)}"
            )
        clone = copy.deepcopy(self)
        clone.heads = nn.ModuleDict({t: clone.heads[t] for t in tasks})
        clone.task_specs = {t: self.task_specs[t] for t in tasks}
        return clone


def register_model(name: str) -> Callable[[type[MultiTaskModel]], type[MultiTaskModel]]:
    """Class decorator: make a MultiTaskModel subclass buildable by name (checkpoints store the name)."""

    def deco(cls: type[MultiTaskModel]) -> type[MultiTaskModel]:
        if not issubclass(cls, MultiTaskModel):
            raise TypeError(f"{cls.__name__} must subclass MultiTaskModel")
        cls.arch = name
        _REGISTRY[name] = cls
        return cls

    return deco


def registered_models() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def build_model(arch: str, **config: Any) -> MultiTaskModel:
    _load_builtin()
    if arch not in _REGISTRY:
        raise ModelContractError(f"unknown model architecture {arch!r}: known {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[arch](**config)


def check_contract(model: object) -> MultiTaskModel:
    """Raise ModelContractError with a clear reason unless `model` follows the contract."""
    if not isinstance(model, MultiTaskModel):
        raise ModelContractError(
            f"{type(model).__name__} is not a MultiTaskModel: subclass edgecut.server.mtl.contract."
            "MultiTaskModel with a `trunk` and a `heads` ModuleDict"
        )
    if not isinstance(getattr(model, "trunk", None), nn.Module):
        raise ModelContractError(f"{type(model).__name__} has no `trunk` module")
    heads = getattr(model, "heads", None)
    if not isinstance(heads, nn.ModuleDict) or len(heads) == 0:
        raise ModelContractError(f"{type(model).__name__} needs a non-empty `heads` ModuleDict")
    missing = [t for t in heads if t not in model.task_specs]
    if missing:
        raise ModelContractError(f"heads without a TaskSpec: {missing}")
    return model


def _load_builtin() -> None:
    # Importing the module registers the reference architectures.
    from edgecut.server.mtl import models  # noqa: F401
