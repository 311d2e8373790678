"""The multi-task model contract: what every model the engine tailors is, and the checks that say why not.

A multi-task model is a `MultiTaskModel`: a shared `trunk` turning the normalised image into a tuple
of feature maps, and one head per task in `heads` (a ModuleDict) turning those features into the
task's output. `forward(x)` takes an image batch in [0, 1] and returns {task: tensor}. The input
normalisation lives inside the model, so an exported ONNX file takes plain [0, 1] RGB.

Every part the engine touches goes through this contract: decomposition keeps a subset of `heads`
(and the trunk parts they read), importance hooks the trunk and heads, pruning keeps each head's
output layer whole. docs/models.md explains the contract with a worked example; plugins.py names the
classes (the built-in ones, a user's by entry point or `module:Class`) and builds them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from edgecut.server.errors import ModelContractError, UnknownTaskError
from edgecut.server.mtl.tasks import TaskSpec


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

    @torch.no_grad()
    def output_layers(self) -> list[nn.Module]:
        """The last Conv2d / Linear each head *runs*: pruning must never change their output channels.

        Found by running the model once (not by the order the layers were declared in, which a head
        is free to choose).
        """
        ran: list[nn.Module] = []
        hooks = [
            m.register_forward_hook(lambda mod, _i, _o: ran.append(mod))
            for m in self.modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))
        ]
        start: dict[str, int] = {}
        last: dict[str, nn.Module] = {}
        for name, head in self.heads.items():

            def begin(_m: nn.Module, _i: object, name: str = name) -> None:
                start[name] = len(ran)

            def end(_m: nn.Module, _i: object, _o: object, name: str = name) -> None:
                if len(ran) > start[name]:
                    last[name] = ran[-1]

            hooks += [head.register_forward_pre_hook(begin), head.register_forward_hook(end)]
        was_training = self.training
        try:
            self.eval()
            self(torch.zeros(1, 3, self.input_size, self.input_size))
        finally:
            self.train(was_training)
            for h in hooks:
                h.remove()
        return list({id(m): m for m in last.values()}.values())

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


def instantiate(cls: type[MultiTaskModel], name: str, **config: Any) -> MultiTaskModel:
    """`cls(**config)`; a failure in the user's constructor becomes one ModelContractError."""
    try:
        model = cls(**config)
    except Exception as exc:  # the user's constructor can raise anything
        shown = {k: v for k, v in config.items() if k != "tasks"}
        raise ModelContractError(
            f"building model {name} with {shown} failed: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    return check_contract(model)


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


@torch.no_grad()
def check_outputs(model: MultiTaskModel) -> MultiTaskModel:
    """Run `model` on a batch of 2 and check each head's output against its task (one clear error).

    Dense tasks must give N x channels x input_size x input_size (labels are compared pixel by pixel),
    image-level tasks N x channels.
    """
    check_contract(model)
    size = model.input_size
    was_training = model.training
    model.eval()
    try:
        out = model(torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)))
    except Exception as exc:  # the user's forward can raise anything
        raise ModelContractError(
            f"{type(model).__name__} fails on a 2 x 3 x {size} x {size} image batch: "
            f"{type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    finally:
        model.train(was_training)
    if not isinstance(out, dict) or set(out) != set(model.heads):
        got = sorted(out) if isinstance(out, dict) else type(out).__name__
        raise ModelContractError(
            f"{type(model).__name__}.forward must return {{task: tensor}} for tasks "
            f"{', '.join(model.heads)}; got {got}"
        )
    for name, y in out.items():
        spec = model.task_specs[name]
        want = (2, spec.channels, size, size) if spec.dense else (2, spec.channels)
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != want:
            got = list(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ModelContractError(
                f"head {name!r} ({spec.kind}, {spec.channels} channels) returns {got} for a batch of 2 "
                f"at {size} x {size}; it must return {list(want)}"
            )
    return model


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""
