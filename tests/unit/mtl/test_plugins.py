"""A user's model class, found by module:Class or by entry point, recorded in and rebuilt from checkpoints;
every way of getting it wrong is one ModelContractError that names the module and the reason."""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from edgecut.server.errors import ModelContractError
from edgecut.server.mtl import build_model, check_outputs, checkpoint, plugins, registered_models
from edgecut.server.mtl.plugins import ENTRY_POINT_GROUP, model_class
from edgecut.server.mtl.tasks import SCENE_TASKS, TaskSpec

USER_MODULE = """
from typing import Any
import torch
from torch import nn
from edgecut.server.mtl.contract import MultiTaskModel


class Head(nn.Module):
    def __init__(self, cin, spec, size):
        super().__init__()
        self.out = nn.Conv2d(cin, spec.channels, 1)  # declared before the layer it follows
        self.body = nn.Conv2d(cin, cin, 3, padding=1)
        self.dense, self.size = spec.dense, size

    def forward(self, feats):
        y = self.out(torch.relu(self.body(feats[0])))
        return y if self.dense else y.mean(dim=(2, 3))


class Net(MultiTaskModel):
    def __init__(self, tasks, input_size=16, width=4, shrink=1):
        super().__init__(tasks, input_size)
        self.width, self.shrink = width, shrink
        self.trunk = nn.Conv2d(3, width, 3, stride=shrink, padding=1)
        self.heads = nn.ModuleDict({t.name: Head(width, t, input_size) for t in tasks})

    def config(self) -> dict[str, Any]:
        return {"input_size": self.input_size, "width": self.width, "shrink": self.shrink}


NotAModel = 3
"""
TASKS = [SCENE_TASKS[0], TaskSpec("n", "classification", 3, ("a", "b", "c"))]


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module `usermodels_<n>` in the current folder (not on sys.path until edgecut puts it there)."""
    name = f"usermodels_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    (tmp_path / "broken_user_mod.py").write_text("raise ZeroDivisionError('at import')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.setattr(plugins, "REGISTRY", dict(plugins.REGISTRY))  # keep the registry clean
    yield name
    for mod in (name, "broken_user_mod"):
        sys.modules.pop(mod, None)


def test_module_class_from_the_current_folder_round_trips_through_a_checkpoint(
    user_module: str, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = build_model(f"{user_module}:Net", tasks=TASKS, input_size=16, width=5)
    assert type(model).__module__ == user_module and model.config()["width"] == 5
    checkpoint.save(tmp_path / "m.pt", model)
    doc = checkpoint.read(tmp_path / "m.pt")
    assert doc["model"] == f"{user_module}:Net" and doc["arch"] == ""
    loaded = checkpoint.load(tmp_path / "m.pt")  # no --model: the checkpoint says which class
    x = torch.rand(2, 3, 16, 16)
    assert all(torch.equal(loaded(x)[t], model.eval()(x)[t]) for t in ("seg", "n"))
    # the output layer is the last one a head *runs*, not the last one it declares
    assert model.output_layers() == [model.heads["seg"].out, model.heads["n"].out]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "nosuchmodule_xyz:Net",
            r"cannot import model module 'nosuchmodule_xyz' .*run edgecut from the folder",
        ),
        ("{mod}:Nett", r"module '{mod}' has no 'Nett'"),
        ("{mod}:NotAModel", r"{mod}:NotAModel is 3, not a MultiTaskModel subclass"),
        (
            "broken_user_mod:Net",
            r"importing model module 'broken_user_mod' failed: ZeroDivisionError: at import",
        ),
        ("__main__:Net", r"defined in a script \(__main__\)"),
        ("no-such-arch", r"unknown model architecture 'no-such-arch': known .*resnet-mtl.*module:Class"),
        (":Net", r"not of the form module:Class"),
    ],
)
def test_a_model_that_cannot_be_found_says_why(user_module: str, spec: str, message: str) -> None:
    with pytest.raises(ModelContractError, match=message.format(mod=user_module)):
        model_class(spec.format(mod=user_module))


def test_constructor_forward_and_output_shape_failures_name_the_model_and_head(user_module: str) -> None:
    with pytest.raises(
        ModelContractError, match=r"building model .*:Net with \{'depth': 3\} failed: TypeError"
    ):
        build_model(f"{user_module}:Net", tasks=TASKS, depth=3)
    # a dense head at half the input size: labels are compared pixel by pixel, so it is refused
    half = build_model(f"{user_module}:Net", tasks=TASKS, input_size=16, shrink=2)
    with pytest.raises(
        ModelContractError,
        match=r"head 'seg' \(segmentation, 6 channels\) returns \[2, 6, 8, 8\] .* must return \[2, 6, 16, 16\]",
    ):
        check_outputs(half)
    broken = build_model(f"{user_module}:Net", tasks=TASKS, input_size=16)
    broken.trunk = torch.nn.Conv2d(4, 4, 1)  # expects 4 input channels, gets RGB
    with pytest.raises(ModelContractError, match=r"Net fails on a 2 x 3 x 16 x 16 image batch: RuntimeError"):
        check_outputs(broken)


def test_weights_that_do_not_fit_the_class_are_refused(user_module: str, tmp_path: Path) -> None:
    checkpoint.save(tmp_path / "m.pt", build_model(f"{user_module}:Net", tasks=TASKS, width=4))
    doc = checkpoint.read(tmp_path / "m.pt")
    doc["config"]["width"] = 6
    torch.save(doc, tmp_path / "changed.pt")
    with pytest.raises(
        ModelContractError, match=r"the weights in .*changed\.pt do not fit model .*:Net: .*size"
    ):
        checkpoint.load(tmp_path / "changed.pt")


def test_an_entry_point_names_the_class_and_the_checkpoint_records_the_name(
    user_module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))  # an installed package is importable
    ep = importlib.metadata.EntryPoint(name="tiny-user", value=f"{user_module}:Net", group=ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points

    def entry_points(**kw: str) -> object:
        return [ep] if kw.get("group") == ENTRY_POINT_GROUP else real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    assert "tiny-user" in registered_models()
    model = build_model("tiny-user", tasks=TASKS)
    checkpoint.save(tmp_path / "m.pt", model)
    assert checkpoint.read(tmp_path / "m.pt")["arch"] == "tiny-user"
    assert type(checkpoint.load(tmp_path / "m.pt")) is type(model)
    bad = importlib.metadata.EntryPoint(name="bad", value="broken_user_mod:Net", group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: [bad])
    with pytest.raises(
        ModelContractError, match=r"cannot load model 'bad' from entry point 'broken_user_mod:Net'"
    ):
        model_class("bad")


def test_the_model_option_overrides_the_recorded_class(user_module: str, tmp_path: Path) -> None:
    checkpoint.save(tmp_path / "m.pt", build_model(f"{user_module}:Net", tasks=TASKS))
    doc = checkpoint.read(tmp_path / "m.pt")
    doc["model"] = "moved_away:Net"  # the module was renamed since training
    torch.save(doc, tmp_path / "moved.pt")
    with pytest.raises(ModelContractError, match=r"cannot import model module 'moved_away' .*PYTHONPATH"):
        checkpoint.load(tmp_path / "moved.pt")
    assert type(checkpoint.load(tmp_path / "moved.pt", f"{user_module}:Net")).__name__ == "Net"
