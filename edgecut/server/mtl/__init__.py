"""Multi-task models: the contract, reference models, data (synthetic scenes, folders), metrics, training.

The names a user needs (docs/models.md), imported on first use (edgecut/lazy.py) so that the light
modules here (task specs, the `edgecut train` options) load without torch:

- the contract: `MultiTaskModel` (subclass it: a `trunk`, one head per task in `heads`, `config()`),
  `TaskSpec` / `TaskKind`, `check_outputs` (run once on a batch: every head's shape, one clear error);
- naming classes: `register_model("name")`, `build_model("name" | "module:Class", **config)`,
  `registered_models()`; the built-in `ResNetMTL` and `DenseCatMTL`;
- checkpoints: `save_checkpoint(path, model)`, `load_checkpoint(path)`;
- data: `FolderDataset` (a labelled folder), `synthetic_scenes(n)` and their `SCENE_TASKS`;
- quality: `delta_m(metrics, reference, specs)`, the mean change over tasks in %.

No name here is also a module's name (tests/unit/mtl/test_api.py): importing `edgecut.server.mtl.train`
would otherwise replace an exported `train` function by the module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecut.lazy import exports

if TYPE_CHECKING:
    from edgecut.server.mtl.checkpoint import load as load_checkpoint
    from edgecut.server.mtl.checkpoint import save as save_checkpoint
    from edgecut.server.mtl.contract import MultiTaskModel, check_outputs
    from edgecut.server.mtl.data import synthetic_scenes
    from edgecut.server.mtl.folder import FolderDataset
    from edgecut.server.mtl.metrics import delta_m
    from edgecut.server.mtl.models import DenseCatMTL, ResNetMTL
    from edgecut.server.mtl.plugins import build_model, register_model, registered_models
    from edgecut.server.mtl.tasks import SCENE_TASKS, TaskKind, TaskSpec

_MTL = "edgecut.server.mtl"
_WHERE = {
    "MultiTaskModel": f"{_MTL}.contract",
    "check_outputs": f"{_MTL}.contract",
    "TaskSpec": f"{_MTL}.tasks",
    "TaskKind": f"{_MTL}.tasks",
    "SCENE_TASKS": f"{_MTL}.tasks",
    "register_model": f"{_MTL}.plugins",
    "build_model": f"{_MTL}.plugins",
    "registered_models": f"{_MTL}.plugins",
    "ResNetMTL": f"{_MTL}.models",
    "DenseCatMTL": f"{_MTL}.models",
    "save_checkpoint": f"{_MTL}.checkpoint:save",
    "load_checkpoint": f"{_MTL}.checkpoint:load",
    "FolderDataset": f"{_MTL}.folder",
    "synthetic_scenes": f"{_MTL}.data",
    "delta_m": f"{_MTL}.metrics",
}
__all__ = [
    "SCENE_TASKS",
    "DenseCatMTL",
    "FolderDataset",
    "MultiTaskModel",
    "ResNetMTL",
    "TaskKind",
    "TaskSpec",
    "build_model",
    "check_outputs",
    "delta_m",
    "load_checkpoint",
    "register_model",
    "registered_models",
    "save_checkpoint",
    "synthetic_scenes",
]
__getattr__, __dir__ = exports(__name__, _WHERE)
del TYPE_CHECKING, exports  # not part of the API
