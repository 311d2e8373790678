"""Where samples come from: synthetic scenes or a user's labelled folder (folder.py), for training,
calibration and validation.

A source is the word "synthetic" or a folder path. For a model, a folder is read with the model's own
TaskSpecs for the tasks it holds labels for (so class lists and kinds must agree), and with none of
them it still gives images (enough for label-free calibration). A folder's evaluation split is `val`,
else `test`, else the folder itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from edgecut.server.errors import DatasetError
from edgecut.server.mtl.data import Batch, synthetic_scenes
from edgecut.server.mtl.folder import FolderDataset
from edgecut.server.mtl.tasks import SCENE_TASKS, TaskSpec, by_name

logger = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
HOLD_OUT = 0.1  # the share of a training folder kept for validation when it has no val split


def is_synthetic(source: str | Path | None) -> bool:
    return source is None or str(source) in ("", SYNTHETIC)


def scene_compatible(specs: Sequence[TaskSpec]) -> bool:
    """Whether synthetic scenes carry labels for every one of these tasks (same name, kind, channels)."""
    scene = by_name(SCENE_TASKS)
    return all(
        s.name in scene and scene[s.name].kind == s.kind and scene[s.name].channels == s.channels
        for s in specs
    )


def eval_split(root: Path) -> str:
    return next((s for s in ("val", "test") if (root / s).is_dir()), "train")


def labelled_tasks(data: Dataset[Batch]) -> set[str]:
    """The tasks a dataset holds labels for (read from its first sample)."""
    return set(data[0]) - {"image"} if len(data) else set()  # type: ignore[arg-type]


def folder_for(
    specs: Sequence[TaskSpec], root: Path, size: int, split: str = "train", image_scale: float | None = None
) -> FolderDataset:
    """The folder's samples for a model with `specs`: every one of its tasks that the folder labels."""
    probe = FolderDataset(root, size, tasks=[], split=split, image_scale=image_scale)
    present = set(probe.available)
    return FolderDataset(
        root, size, tasks=[s for s in specs if s.name in present], split=split, image_scale=image_scale
    )


def training_data(
    data: str,
    val_data: str | None,
    size: int,
    n_train: int,
    n_val: int,
    seed: int,
    cache_dir: Path | None,
    image_scale: float | None = None,
    show_progress: bool = False,
) -> tuple[Dataset[Batch], Dataset[Batch], list[TaskSpec]]:
    """(train, validation, the tasks): synthetic scenes, or a folder whose tasks and kinds it declares.

    A folder's validation samples come from `val_data`, else its own `val` split, else a seeded
    hold-out of HOLD_OUT of its training samples (never overlapping the training ones).
    """
    if is_synthetic(data):
        # Train and validation scenes come from different seeds, so they never overlap.
        train = synthetic_scenes(n_train, seed, size, cache_dir, show_progress)
        val = synthetic_scenes(n_val, seed + 1000, size, cache_dir, show_progress)
        return train, val, list(SCENE_TASKS)
    root = Path(data)
    train_ds = FolderDataset(root, size, split="train", image_scale=image_scale)
    specs = list(train_ds.specs.values())
    if val_data:
        vroot = Path(val_data)
        return train_ds, FolderDataset(vroot, size, specs, eval_split(vroot), image_scale), specs
    if (root / "val").is_dir():
        return train_ds, FolderDataset(root, size, specs, "val", image_scale), specs
    if len(train_ds) < 2:
        raise DatasetError(
            f"{root} holds {len(train_ds)} image: need at least 2 to hold one out for validation"
        )
    order = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(seed)).tolist()
    n_out = max(1, round(HOLD_OUT * len(train_ds)))
    logger.info("no validation split in %s: holding out %d of %d images", root, n_out, len(train_ds))
    return Subset(train_ds, order[n_out:]), Subset(train_ds, order[:n_out]), specs


def engine_data(
    specs: Sequence[TaskSpec],
    size: int,
    calib_data: str | None,
    val_data: str | None,
    cache_dir: Path | None,
    n_calib: int,
    n_val: int,
    calib_seed: int,
    val_seed: int,
    image_scale: float | None = None,
) -> tuple[Dataset[Batch], Dataset[Batch] | None]:
    """(calibration images, validation samples or None) for tailoring a model with `specs`.

    Validation: `val_data`, else the calibration folder's val/test split, else synthetic scenes when
    the calibration images are synthetic and the scenes label every task, else none (artifacts then
    carry no quality figures, and a warning says so).
    """
    names = ", ".join(s.name for s in specs)
    if is_synthetic(calib_data):
        calib: Dataset[Batch] = synthetic_scenes(n_calib, calib_seed, size, cache_dir, show_progress=False)
        if not scene_compatible(specs):
            logger.warning(
                "calibrating tasks %s on synthetic scenes: give --calib-data FOLDER with images like the "
                "model's own for better scores",
                names,
            )
    else:
        calib = folder_for(specs, Path(str(calib_data)), size, "train", image_scale)
    val: Dataset[Batch] | None = None
    if val_data:
        root = Path(val_data)
        val = folder_for(specs, root, size, eval_split(root), image_scale)
    elif not is_synthetic(calib_data) and eval_split(Path(str(calib_data))) != "train":
        root = Path(str(calib_data))
        val = folder_for(specs, root, size, eval_split(root), image_scale)
    elif is_synthetic(calib_data) and scene_compatible(specs):  # never judge a user's folder model on them
        val = synthetic_scenes(n_val, val_seed, size, cache_dir, show_progress=False)
    else:
        logger.warning(
            "no validation data for tasks %s: give --val-data FOLDER to report quality figures", names
        )
    if val is not None and not labelled_tasks(val):
        raise DatasetError(f"the validation data has labels for none of the model's tasks ({names})")
    if (
        val is not None
        and isinstance(calib, FolderDataset)
        and isinstance(val, FolderDataset)
        and _same_images(calib, val)
    ):
        calib, val = _halves(calib)
        logger.info(
            "calibration and validation would read the same images (%s): half of them calibrate, the "
            "other half judge the result (give --val-data FOLDER with other images to use them all)",
            val_data or calib_data,
        )
    return calib, val


def _same_images(a: FolderDataset, b: FolderDataset) -> bool:
    # a model judged on the images it was calibrated (and recovered) on looks better than it is
    return a.base.resolve() == b.base.resolve()


def _halves(data: FolderDataset) -> tuple[Dataset[Batch], Dataset[Batch]]:
    if len(data) < 2:
        raise DatasetError(
            f"{data.base} holds {len(data)} image(s): at least 2 are needed to calibrate and judge"
        )
    idx = list(range(len(data)))
    return Subset(data, idx[0::2]), Subset(data, idx[1::2])


class LabelledSource:
    """Labelled training samples for the engine's from-scratch candidate, read on first use (rendering
    thousands of scenes takes a while, and a server that never trains one should not pay for it)."""

    def __init__(self, tasks: set[str], load: Callable[[], Dataset[Batch]], describe: str) -> None:
        self.tasks = frozenset(tasks)
        self.describe = describe
        self._load = load
        self._data: Dataset[Batch] | None = None
        self._lock = threading.Lock()

    def data(self) -> Dataset[Batch]:
        with self._lock:
            if self._data is None:
                self._data = self._load()
            return self._data


OFF = "off"


def training_source(
    specs: Sequence[TaskSpec],
    size: int,
    train_data: str | None,
    calib_data: str | None,
    cache_dir: Path | None,
    n_train: int,
    seed: int,
    image_scale: float | None = None,
    val_data: str | None = None,
) -> LabelledSource | None:
    """Where the engine's from-scratch candidate learns from: `train_data` ("synthetic", a labelled
    folder, or "off"); by default synthetic scenes when the calibration images are synthetic and the
    scenes label every task of the model (the reference's own training set), else none."""
    if train_data == OFF:
        return None
    if train_data is None:
        if not (is_synthetic(calib_data) and scene_compatible(specs)):
            return None
        train_data = SYNTHETIC
    if is_synthetic(train_data):
        if not scene_compatible(specs):
            raise DatasetError(
                "synthetic scenes do not label this model's tasks: give --train-data a labelled folder or off"
            )
        return LabelledSource(
            {s.name for s in specs},
            lambda: synthetic_scenes(n_train, seed, size, cache_dir, show_progress=False),
            f"{n_train} synthetic scenes",
        )
    root = Path(train_data)
    if val_data and Path(val_data).resolve() == root.resolve() and eval_split(root) == "train":
        raise DatasetError(
            f"--train-data and --val-data are both {root} with no val or test split: the from-scratch "
            "candidate would be judged on its own training samples; give --val-data another folder"
        )
    data = folder_for(specs, root, size, "train", image_scale)
    tasks = labelled_tasks(data)
    if not tasks:
        raise DatasetError(f"--train-data {root} labels none of the model's tasks")
    return LabelledSource(tasks, lambda: data, f"{len(data)} samples of {root}")
