"""Write rendered scenes as a labelled folder in the layout a user would bring (mtl/folder.py).

The benchmarks and tests use it to exercise the bring-your-own-data path end to end without a
download. Besides the scenes' own labels it derives two tasks no built-in spec knows, so tasks.json
must declare them:

- slant (regression): the x component of the surface normal, in [-1, 1]; 0 (a surface facing the
  camera) is a real value, not a gap;
- largest (classification): which object class covers the most pixels (sphere, box, cylinder, cone).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edgecut.server.mtl.scenes import BOX, CONE, CYLINDER, SPHERE, render
from edgecut.server.mtl.tasks import COUNT_CLASSES, SEG_CLASSES

OBJECTS = (SPHERE, BOX, CYLINDER, CONE)
LARGEST_CLASSES = tuple(SEG_CLASSES[c] for c in OBJECTS)
TASKS: dict[str, dict[str, Any]] = {
    "seg": {"kind": "segmentation", "classes": list(SEG_CLASSES)},
    "depth": {"kind": "depth"},
    "slant": {"kind": "regression"},
    "edges": {"kind": "edges"},
    "count": {"kind": "classification", "classes": list(COUNT_CLASSES)},
    "largest": {"kind": "classification", "classes": list(LARGEST_CLASSES)},
}


def write_scene_folder(
    root: Path, n: int, seed: int, size: int, tasks: tuple[str, ...] = tuple(TASKS)
) -> Path:
    """`n` scenes of `seed` at `size` pixels under `root` (images/, one folder or json per task)."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown scene-folder task {unknown[0]!r}: choose from {', '.join(TASKS)}")
    (root / "images").mkdir(parents=True, exist_ok=True)
    image_level: dict[str, dict[str, int]] = {t: {} for t in tasks if TASKS[t]["kind"] == "classification"}
    for i in range(n):
        s = render(seed, i, size)
        key = f"{i:05d}"
        Image.fromarray(np.moveaxis(s.image, 0, -1)).save(root / "images" / f"{key}.png")
        dense: dict[str, Image.Image | np.ndarray] = {
            "seg": Image.fromarray(s.seg.astype(np.uint8)),
            "depth": s.depth[0].astype(np.float32),
            "slant": s.normals[0].astype(np.float32),
            "edges": Image.fromarray((s.edges[0] * 255).astype(np.uint8)),
        }
        for task in tasks:
            value = dense.get(task)
            if isinstance(value, Image.Image):
                (root / task).mkdir(exist_ok=True)
                value.save(root / task / f"{key}.png")
            elif value is not None:
                (root / task).mkdir(exist_ok=True)
                np.save(root / task / f"{key}.npy", value)
        if "count" in image_level:
            image_level["count"][key] = int(s.count)
        if "largest" in image_level:
            areas = [(s.seg == c).sum() for c in OBJECTS]
            image_level["largest"][key] = int(np.argmax(areas))
    for task, labels in image_level.items():
        (root / f"{task}.json").write_text(json.dumps(labels))
    (root / "tasks.json").write_text(json.dumps({t: TASKS[t] for t in tasks}, indent=1))
    return root
