"""The multi-task model contract, the two reference architectures, the registry and checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from edgecut.server.errors import ModelContractError, UnknownTaskError
from edgecut.server.mtl import (
    MultiTaskModel,
    build_model,
    checkpoint,
    plugins,
    register_model,
    registered_models,
)
from edgecut.server.mtl.contract import check_contract
from edgecut.server.mtl.tasks import SCENE_TASKS, TaskSpec

SIZE = 32
SMALL: dict[str, dict[str, Any]] = {
    "resnet-mtl": {"widths": [8, 8, 16, 16], "head_width": 8},
    "densecat-mtl": {"width": 8, "growth": 4, "layers": 2, "head_width": 8},
}
EXPECTED = {
    "seg": (6, SIZE, SIZE),
    "depth": (1, SIZE, SIZE),
    "normals": (3, SIZE, SIZE),
    "edges": (1, SIZE, SIZE),
    "count": (5,),
}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


class ConvHead(nn.Module):
    """A head as the contract wants it: it takes the trunk's tuple of feature maps."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.conv(feats[-1])


def _model(arch: str) -> MultiTaskModel:
    torch.manual_seed(0)
    model = build_model(arch, input_size=SIZE, **SMALL[arch])
    model.train()
    with torch.no_grad():  # move the BatchNorm statistics away from their defaults
        model(torch.rand(4, 3, SIZE, SIZE))
    return model.eval()


def _images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def test_both_architectures_are_registered() -> None:
    assert {"resnet-mtl", "densecat-mtl"} <= set(registered_models())
    with pytest.raises(ModelContractError, match=r"unknown model architecture 'vit-mtl'.*resnet-mtl"):
        build_model("vit-mtl")


@pytest.mark.parametrize("arch", ["resnet-mtl", "densecat-mtl"])
def test_forward_gives_one_output_per_task_of_the_right_shape(arch: str) -> None:
    model = _model(arch)
    assert check_contract(model) is model and model.task_names == [t.name for t in SCENE_TASKS]
    out = model(_images(2))
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == EXPECTED
    assert all(v.shape[0] == 2 and torch.isfinite(v).all() for v in out.values())
    assert torch.allclose(out["normals"].norm(dim=1), torch.ones(()), atol=1e-5)
    # pruning must keep each head's output layer whole: one per head, with the task's channels
    layers = model.output_layers()
    widths = [m.out_channels if isinstance(m, nn.Conv2d) else m.out_features for m in layers]
    assert widths == [t.channels for t in SCENE_TASKS]


@pytest.mark.parametrize("arch", ["resnet-mtl", "densecat-mtl"])
def test_select_keeps_only_the_chosen_heads(arch: str) -> None:
    model = _model(arch)
    x = _images(2)
    full = model(x)
    sub = model.select(["count", "depth"])
    assert sub.task_names == ["count", "depth"] and list(sub.task_specs) == ["count", "depth"]
    out = sub(x)
    assert set(out) == {"count", "depth"}
    assert torch.equal(out["depth"], full["depth"]) and torch.equal(out["count"], full["count"])
    assert model.task_names == [t.name for t in SCENE_TASKS]  # the original keeps every head
    with torch.no_grad():
        next(sub.trunk.parameters()).add_(1.0)
    assert torch.equal(model(x)["depth"], full["depth"])  # a copy, not a view of the original


def test_select_of_an_unknown_task_raises_unknown_task() -> None:
    model = _model("resnet-mtl")
    with pytest.raises(UnknownTaskError, match=r"unknown task 'flow'.*seg, depth, normals, edges, count"):
        model.select(["depth", "flow"])


def test_check_contract_rejects_models_that_break_it() -> None:
    with pytest.raises(ModelContractError, match="Linear is not a MultiTaskModel: subclass"):
        check_contract(nn.Linear(3, 3))

    class NoHeads(MultiTaskModel):
        def __init__(self) -> None:
            super().__init__(SCENE_TASKS, SIZE)
            self.trunk = nn.Identity()
            self.heads = nn.ModuleDict()

    with pytest.raises(ModelContractError, match="NoHeads needs a non-empty `heads` ModuleDict"):
        check_contract(NoHeads())

    model = _model("resnet-mtl")
    model.heads["flow"] = nn.Identity()
    with pytest.raises(ModelContractError, match=r"heads without a TaskSpec: \['flow'\]"):
        check_contract(model)


@pytest.mark.parametrize("arch", ["resnet-mtl", "densecat-mtl"])
def test_checkpoint_round_trip_gives_identical_outputs(arch: str, tmp_path: Path) -> None:
    model = _model(arch)
    x = _images(3)
    path = tmp_path / "m.pt"
    checkpoint.save(path, model, {"note": "kept"})
    loaded = checkpoint.load(path)
    assert type(loaded) is type(model) and loaded.arch == arch and not loaded.training
    assert loaded.config() == model.config() and loaded.task_specs == model.task_specs
    a, b = model(x), loaded(x)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert checkpoint.read(path)["note"] == "kept"

    sub = model.select(["seg", "edges"])
    checkpoint.save(tmp_path / "sub.pt", sub)
    loaded_sub = checkpoint.load(tmp_path / "sub.pt")
    assert loaded_sub.task_names == ["seg", "edges"]
    assert torch.equal(loaded_sub(x)["seg"], a["seg"])


def test_a_user_model_registers_and_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins, "REGISTRY", dict(plugins.REGISTRY))  # keep the registry clean

    @register_model("tiny-user")
    class Tiny(MultiTaskModel):
        def __init__(
            self,
            tasks: list[TaskSpec] | tuple[TaskSpec, ...] = SCENE_TASKS[1:2],
            input_size: int = 8,
            width: int = 4,
        ) -> None:
            super().__init__(tasks, input_size)
            self.width = width
            self.trunk = nn.Conv2d(3, width, 3, padding=1)
            self.heads = nn.ModuleDict({t.name: ConvHead(width, t.channels) for t in tasks})

        def config(self) -> dict[str, Any]:
            return {"input_size": self.input_size, "width": self.width}

    assert "tiny-user" in registered_models() and Tiny.arch == "tiny-user"
    torch.manual_seed(0)
    model = build_model("tiny-user", width=5)
    checkpoint.save(tmp_path / "t.pt", model)
    loaded = checkpoint.load(tmp_path / "t.pt")
    assert isinstance(loaded, Tiny) and loaded.width == 5
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(loaded(x)["depth"], model.eval()(x)["depth"])

    with pytest.raises(TypeError, match="must subclass MultiTaskModel"):
        register_model("plain")(nn.Linear)  # type: ignore[arg-type]


def test_damaged_or_missing_checkpoints_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelContractError, match="no checkpoint at"):
        checkpoint.load(tmp_path / "absent.pt")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ModelContractError, match="is not a readable checkpoint"):
        checkpoint.load(tmp_path / "bad.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ModelContractError, match="is not an edgecut checkpoint"):
        checkpoint.load(tmp_path / "other.pt")
