"""Save and load multi-task models: architecture + config + tasks + weights, written atomically.

A checkpoint records its model two ways: `arch`, the registered or entry-point name (empty for a
class that has neither), and `model`, the `module:Class` path that imports the class again. Loading
uses, in order: a model the caller names (`--model`), the `arch` name if it is known here, the
`model` path. The file is read with `weights_only=True`: it can hold tensors and plain data only.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from edgecut.server.errors import ModelContractError
from edgecut.server.mtl.contract import MultiTaskModel, instantiate
from edgecut.server.mtl.plugins import known, model_class, model_ref
from edgecut.server.mtl.tasks import TaskSpec

logger = logging.getLogger(__name__)


def save(path: Path, model: MultiTaskModel, extra: dict[str, Any] | None = None) -> None:
    """Write `model` (its class, config, tasks and weights; `extra` keys beside them) atomically to `path`."""
    doc = {
        "format": "edgecut.checkpoint/1",
        "arch": model.arch,
        "model": model_ref(type(model)),
        "config": model.config(),
        "tasks": [asdict(s) for s in model.task_specs.values()],
        "state_dict": model.state_dict(),
        **(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(doc, tmp)
    os.replace(tmp, path)


def read(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ModelContractError(f"no checkpoint at {path}: train one with `edgecut train`")
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged or foreign file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelContractError(f"{path} is not a readable checkpoint: {first}") from exc
    if not isinstance(doc, dict) or doc.get("format") != "edgecut.checkpoint/1":
        raise ModelContractError(f"{path} is not an edgecut checkpoint")
    return doc


def recorded_model(doc: dict[str, Any]) -> str:
    """How the checkpoint names its class: the arch name when it is known here, else module:Class."""
    arch, ref = doc.get("arch") or "", doc.get("model") or ""
    if arch and (known(arch) or not ref):
        return str(arch)
    return str(ref)


def model_from(
    doc: dict[str, Any], model: str | None = None, source: str = "the checkpoint"
) -> MultiTaskModel:
    """Rebuild the model of a checkpoint `doc`; `model` names the class to use instead of the recorded one."""
    spec = model or recorded_model(doc)
    if not spec:
        raise ModelContractError(f"{source} does not name its model class: pass --model module:Class")
    cls = model_class(spec)
    if model and doc.get("model") not in (None, "", model_ref(cls)) and model != doc.get("arch"):
        logger.warning("%s was saved from %s; building it as %s", source, doc.get("model"), model)
    tasks = [TaskSpec(**{**t, "classes": tuple(t.get("classes", ()))}) for t in doc["tasks"]]
    built = instantiate(cls, spec, tasks=tasks, **doc["config"])
    try:
        built.load_state_dict(doc["state_dict"])
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise ModelContractError(f"the weights in {source} do not fit model {spec}: {detail[:300]}") from exc
    return built.eval()


def load(path: Path, model: str | None = None) -> MultiTaskModel:
    """The model saved at `path`, in eval mode; `model` names a class to build instead of the recorded one."""
    return model_from(read(path), model, source=str(path))


def file_id(path: Path) -> str:
    """A content id of the checkpoint file (the base-model part of every build key)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]
