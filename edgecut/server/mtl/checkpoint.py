"""Save and load multi-task models: architecture name + config + tasks + weights, written atomically."""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from edgecut.server.errors import ModelContractError
from edgecut.server.mtl.contract import MultiTaskModel, build_model
from edgecut.server.mtl.tasks import TaskSpec


def save(path: Path, model: MultiTaskModel, extra: dict[str, Any] | None = None) -> None:
    doc = {
        "format": "edgecut.checkpoint/1",
        "arch": model.arch,
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
        doc = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise ModelContractError(f"{path} is not a readable checkpoint: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != "edgecut.checkpoint/1":
        raise ModelContractError(f"{path} is not an edgecut checkpoint")
    return doc


def model_from(doc: dict[str, Any]) -> MultiTaskModel:
    tasks = [TaskSpec(**{**t, "classes": tuple(t.get("classes", ()))}) for t in doc["tasks"]]
    model = build_model(doc["arch"], tasks=tasks, **doc["config"])
    model.load_state_dict(doc["state_dict"])
    return model.eval()


def load(path: Path) -> MultiTaskModel:
    return model_from(read(path))


def file_id(path: Path) -> str:
    """A content id of the checkpoint file (the base-model part of every build key)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]
