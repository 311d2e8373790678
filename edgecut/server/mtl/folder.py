"""Real labelled images from an NYUv2-style folder, as a torch Dataset giving the same samples as data.py.

Two layouts are read; `root/<split>` is used when it exists, else `root` itself (images/ at the top with
val/ inside, as docs/models.md shows, is that case for the train split):

    NYUv2 npy (MTAN / DiSparse preprocessed)         image files
    root/train/image/<i>.npy   H x W x 3, uint8 or 0-1  root/images/<id>.png|jpg|npy
    root/train/label/<i>.npy   H x W ids, -1 = ignore   root/seg/<id>.png|npy      8-bit ids, 255 = ignore
    root/train/depth/<i>.npy   H x W (x 1), metres      root/depth/<id>.png|npy    16-bit png mm, npy metres
    root/train/normal/<i>.npy  H x W x 3 in [-1, 1]     root/normals/<id>.png|npy  RGB png [-1,1] -> [0,255]
                                                        root/edges/<id>.png|npy    png > 127 = edge
                                                        root/<task>/<id>.npy       a declared regression
                                                        root/<task>.json           {id: class index}

Folder names map to task names (label -> seg, normal -> normals, edge -> edges). `tasks.json` (in the
split folder or the root) may list the tasks, as a list of names or as {name: {"kind": ..., ...}};
otherwise the tasks are the json files and the folders named after a known task (others are logged and
skipped). An entry may carry "classes" (segmentation, classification), "missing" (depth: the raw value
that marks no measurement, default 0; null = only non-positive values), "channels" and "scale"
(regression). Class lists come from tasks.json, else the NYUv2 13 classes for the npy layout's seg,
else the synthetic scenes' spec of that name, else (image-level json only) one class per index up to
the largest label. decode.py says how each file is read; nothing is rescaled or dropped silently.

No measurement is marked as in data.py: depth 0, all-zero normals, seg 255. With `size`, every sample
is resized to size x size: nearest for labels, bilinear (antialiased) for the image and a regression,
and for depth and normals bilinear over the valid pixels only, so invalid zeros never bleed into
measured values.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from edgecut.server.errors import DatasetError
from edgecut.server.mtl import decode
from edgecut.server.mtl.data import IGNORE_INDEX, Batch
from edgecut.server.mtl.tasks import KINDS, SCENE_TASKS, TaskSpec, by_name

logger = logging.getLogger(__name__)

IMAGE_DIRS = ("images", "image")
ALIASES = {"label": "seg", "labels": "seg", "semantic": "seg", "normal": "normals", "edge": "edges"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy")
LABEL_SUFFIXES = (".png", ".npy")
# The 13-class NYUv2 labels of the MTAN preprocessing (ids 0-12, -1 unlabelled).
# fmt: off
NYUV2_CLASSES = (
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa", "table", "tv",
    "wall", "window",
)
# fmt: on


def _task_name(name: str) -> str:
    return ALIASES.get(name, name)


def _natural(name: str) -> tuple[int, int, str]:
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _index(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """{id: file} of the files in `folder` with one of `suffixes`; two files for one id is an error."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith(".") or p.suffix.lower() not in suffixes:
            continue
        if p.stem in found:
            raise DatasetError(
                f"two files for image {p.stem!r} in {folder}: {found[p.stem].name} and {p.name}"
            )
        found[p.stem] = p
    return found


def _is_split(d: Path) -> bool:
    """A split folder (val/, test/, ...): a folder with its own images inside."""
    return d.is_dir() and any((d / i).is_dir() for i in IMAGE_DIRS)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc


class FolderDataset(Dataset[Batch]):
    """Samples of one split of a labelled folder (see the module docstring for the layouts).

    `tasks` selects and orders the tasks (names or TaskSpecs; a TaskSpec fixes the class list, e.g.
    `model.task_specs.values()`); by default every task present is loaded. `specs` gives their TaskSpecs
    for `evaluate()`. `image_scale` divides float images (for files not in [0, 1], e.g. 255).
    """

    def __init__(
        self,
        root: Path,
        size: int | None = None,
        tasks: Sequence[str | TaskSpec] | None = None,
        split: str = "train",
        image_scale: float | None = None,
    ) -> None:
        if size is not None and size < 1:
            raise DatasetError(f"size must be a positive number of pixels, got {size}")
        if image_scale is not None and not image_scale > 0:
            raise DatasetError(f"the image scale must be a positive number, got {image_scale}")
        self.root = Path(root)
        self.size = size
        self.image_scale = image_scale
        self.base = self._split_folder(split)
        image_dir = next((self.base / d for d in IMAGE_DIRS if (self.base / d).is_dir()), None)
        if image_dir is None:
            raise DatasetError(
                f"no image folder in {self.base}: expected {self.base}/images/<id>.png|jpg, or the NYUv2 npy "
                f"layout {self.root}/<split>/image/<i>.npy"
            )
        self.image_files = _index(image_dir, IMAGE_SUFFIXES)
        if not self.image_files:
            raise DatasetError(f"no images in {image_dir} (looked for {', '.join(IMAGE_SUFFIXES)} files)")
        self.ids = sorted(self.image_files, key=_natural)
        self.npy_layout = image_dir.name == "image"
        folders, jsons = self._sources(image_dir)
        declared = self._declared()
        wanted: Sequence[str | TaskSpec] = (
            tasks
            if tasks is not None
            else list(declared)
            if declared is not None
            else self._found(folders, jsons)
        )
        self.specs: dict[str, TaskSpec] = {}
        self.options: dict[str, dict[str, Any]] = {}  # task -> its tasks.json entry (decoder options)
        self.files: dict[str, dict[str, Path]] = {}  # dense task -> {id: file}
        self.labels: dict[str, dict[str, int]] = {}  # image-level task -> {id: class}
        for want in wanted:
            name = want.name if isinstance(want, TaskSpec) else _task_name(want)
            if name in folders:
                self._add_dense(name, folders[name], want, declared)
            elif name in jsons:
                self._add_image_level(name, jsons[name], want, declared)
            else:
                raise DatasetError(
                    f"no labels for task {name!r} in {self.base}: expected a folder {name}/ or a file "
                    f"{name}.json; found {', '.join([*folders, *jsons]) or 'none'}"
                )
        if not self.specs and tasks is None:  # an explicit empty task list reads the images only
            raise DatasetError(f"no task labels in {self.base}: add folders such as seg/, depth/, normals/")

    def _split_folder(self, split: str) -> Path:
        if not self.root.is_dir():
            raise DatasetError(f"no dataset folder at {self.root}")
        if (self.root / split).is_dir():
            return self.root / split
        if any((self.root / i).is_dir() for i in IMAGE_DIRS):
            return self.root  # images at the top with val/ (or test/) beside them: the top is the train split
        splits = sorted(d.name for d in self.root.iterdir() if _is_split(d))
        if splits:
            raise DatasetError(f"no split {split!r} in {self.root}: found {', '.join(splits)}")
        return self.root

    @property
    def available(self) -> list[str]:
        """Every task this folder holds labels for (folders and json files), loaded or not."""
        image_dir = next(self.base / d for d in IMAGE_DIRS if (self.base / d).is_dir())
        folders, jsons = self._sources(image_dir)
        return [*folders, *jsons]

    def _sources(self, image_dir: Path) -> tuple[dict[str, Path], dict[str, Path]]:
        """Task name -> its folder (dense) and -> its json file (image-level)."""
        folders: dict[str, Path] = {}
        jsons: dict[str, Path] = {}
        for p in sorted(self.base.iterdir()):
            if p.name.startswith(".") or p == image_dir or _is_split(p):
                continue
            if p.is_dir():
                folders[_task_name(p.name)] = p
            elif p.suffix == ".json" and p.name != "tasks.json":
                jsons[_task_name(p.stem)] = p
        return folders, jsons

    def _found(self, folders: dict[str, Path], jsons: dict[str, Path]) -> list[str]:
        """Without tasks.json: every json file, and the folders named after a known task (others logged)."""
        known = [n for n in folders if n in by_name(SCENE_TASKS)]
        for n in folders:
            if n not in known:
                logger.warning("ignoring %s: not a known task folder (declare it in tasks.json)", folders[n])
        return [*known, *jsons]

    def _declared(self) -> dict[str, dict[str, Any]] | None:
        path = next((d / "tasks.json" for d in (self.base, self.root) if (d / "tasks.json").is_file()), None)
        if path is None:
            return None
        doc = _read_json(path)
        if isinstance(doc, list) and all(isinstance(t, str) for t in doc):
            return {_task_name(t): {} for t in doc}
        if isinstance(doc, dict) and all(isinstance(v, dict) for v in doc.values()):
            return {_task_name(k): v for k, v in doc.items()}
        raise DatasetError(
            f'{path} must be a list of task names or {{name: {{"kind": ..., "classes": [...]}}}}'
        )

    def _spec(
        self,
        name: str,
        want: str | TaskSpec,
        declared: dict[str, dict[str, Any]] | None,
        dense: bool,
        labels: Sequence[int] = (),
    ) -> TaskSpec:
        known = by_name(SCENE_TASKS).get(name)
        decl = (declared or {}).get(name, {})
        self.options[name] = decl
        kind: Any = (
            decl.get("kind") or (known.kind if known else None) or (None if dense else "classification")
        )
        if isinstance(want, TaskSpec):
            if decl.get("kind") not in (None, want.kind):
                raise DatasetError(
                    f"task {name!r} is {decl['kind']} in the tasks.json of {self.base} but {want.kind} in the model"
                )
            spec = want
        elif kind not in KINDS:
            what = f"kind {kind!r} is not one of" if kind else "no kind: declare it in tasks.json as one of"
            raise DatasetError(
                f"task {name!r} in {self.base} has {what} {', '.join(KINDS)}, e.g. "
                f'{{"{name}": {{"kind": "regression"}}}} or {{"{name}": {{"kind": "segmentation", '
                '"classes": [...]}}'
            )
        elif kind in ("segmentation", "classification"):
            classes = tuple(str(c) for c in decl.get("classes", ()))
            if not classes and kind == "segmentation" and name == "seg" and self.npy_layout:
                classes = NYUV2_CLASSES
            if not classes and known is not None and known.kind == kind:
                classes = known.classes
            if not classes and labels:
                classes = tuple(str(i) for i in range(max(labels) + 1))
            if not classes:
                raise DatasetError(f"task {name!r}: list its classes in tasks.json")
            spec = TaskSpec(name, kind, len(classes), classes)
        elif kind == "regression":
            spec = TaskSpec(name, kind, self._regression_channels(name, decl))
        else:
            spec = TaskSpec(name, kind, 3 if kind == "normals" else 1)
        if spec.dense != dense:
            where = f"a folder {name}/" if dense else f"a file {name}.json"
            raise DatasetError(f"task {name!r} is {spec.kind} but {self.base} holds {where}")
        return spec

    def _regression_channels(self, name: str, decl: dict[str, Any]) -> int:
        """Declared "channels", else those of the first file (all files are checked when read)."""
        if "channels" in decl:
            if not isinstance(decl["channels"], int) or decl["channels"] < 1:
                raise DatasetError(
                    f"task {name!r}: channels must be a positive integer, got {decl['channels']!r}"
                )
            return int(decl["channels"])
        folder = self.base / name
        first = next(iter(_index(folder, LABEL_SUFFIXES).values()), None) if folder.is_dir() else None
        return 1 if first is None else int(decode.DECODERS["regression"](first, decl).shape[0])

    def _add_dense(
        self,
        name: str,
        folder: Path,
        want: str | TaskSpec,
        declared: dict[str, dict[str, Any]] | None,
    ) -> None:
        spec = self._spec(name, want, declared, dense=True)
        files = _index(folder, LABEL_SUFFIXES)
        missing = [i for i in self.ids if i not in files]
        if missing:
            raise DatasetError(
                f"{folder / missing[0]}.png|.npy is missing: {len(missing)} of {len(self.ids)} images "
                f"have no {name} file in {folder}"
            )
        self.specs[name], self.files[name] = spec, files

    def _add_image_level(
        self,
        name: str,
        path: Path,
        want: str | TaskSpec,
        declared: dict[str, dict[str, Any]] | None,
    ) -> None:
        doc = _read_json(path)
        if not isinstance(doc, dict):
            raise DatasetError(f'{path} must map image ids to class indices, e.g. {{"0001": 2}}')
        missing = [i for i in self.ids if i not in doc]
        if missing:
            raise DatasetError(f"{path} has no label for image {missing[0]!r} ({len(missing)} missing)")
        labels: dict[str, int] = {}
        for i in self.ids:
            v = doc[i]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise DatasetError(f"{path}: label of image {i!r} is {v!r}, expected a class index >= 0")
            labels[i] = v
        spec = self._spec(name, want, declared, dense=False, labels=list(labels.values()))
        bad = next((i for i, v in labels.items() if v >= spec.channels), None)
        if bad is not None:
            raise DatasetError(
                f"{path}: label {labels[bad]} of image {bad!r} is beyond the "
                f"{spec.channels} classes of {name!r}"
            )
        self.specs[name], self.labels[name] = spec, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> Batch:
        key = self.ids[i]
        image_path = self.image_files[key]
        image = decode.image(image_path, self.image_scale)
        sample: Batch = {"image": torch.from_numpy(image)}
        for name, spec in self.specs.items():
            if name in self.labels:
                sample[name] = torch.tensor(self.labels[name][key], dtype=torch.int64)
                continue
            path = self.files[name][key]
            arr = decode.DECODERS[spec.kind](path, self.options.get(name, {}))
            if arr.shape[-2:] != image.shape[-2:]:
                raise DatasetError(
                    f"{path} is {arr.shape[-2]} x {arr.shape[-1]} but its image {image_path} "
                    f"is {image.shape[-2]} x {image.shape[-1]}"
                )
            if spec.kind == "regression" and arr.shape[0] != spec.channels:
                raise DatasetError(
                    f"{path} has {arr.shape[0]} channels but task {name!r} has {spec.channels}"
                )
            if spec.kind == "segmentation":
                beyond = (arr != IGNORE_INDEX) & (arr >= spec.channels)
                if beyond.any():
                    raise DatasetError(
                        f"{path} holds class id {int(arr[beyond].max())} but {name!r} has {spec.channels} "
                        f"classes: list them in tasks.json, or mark unlabelled pixels {IGNORE_INDEX}"
                    )
            sample[name] = torch.from_numpy(np.ascontiguousarray(arr))
        if self.size is not None and image.shape[-2:] != (self.size, self.size):
            sample["image"] = decode.resize_bilinear(sample["image"], self.size).clamp(0, 1)
            for name, spec in self.specs.items():
                if spec.dense:
                    sample[name] = decode.resize(spec.kind, sample[name], self.size)
        for name, spec in self.specs.items():
            if spec.kind == "segmentation":
                sample[name] = sample[name][0]  # H x W, as in data.py
        return sample
