"""Where training, calibration and validation samples come from: synthetic scenes or a user's folder."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from edgecut.server.errors import DatasetError
from edgecut.server.mtl.sources import engine_data, labelled_tasks, training_data, training_source
from edgecut.server.mtl.tasks import SCENE_TASKS, TaskSpec
from edgecut_bench.scene_folder import write_scene_folder

SIZE = 16
SLANT = TaskSpec("slant", "regression", 1)
LARGEST = TaskSpec("largest", "classification", 4, ("sphere", "box", "cylinder", "cone"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_scene_folder(root / "train", 20, 1, SIZE, ("seg", "slant", "count"))
    write_scene_folder(root / "val", 6, 2, SIZE, ("seg", "slant", "count"))
    write_scene_folder(root / "partial", 4, 3, SIZE, ("seg", "slant"))
    return root


def _images(ds: torch.utils.data.Dataset) -> list[torch.Tensor]:
    return [ds[i]["image"] for i in range(len(ds))]  # type: ignore[arg-type]


def test_a_folder_trains_with_its_declared_tasks_and_validates_on_its_val_split(folder: Path) -> None:
    train, val, specs = training_data(str(folder / "train"), str(folder / "val"), SIZE, 0, 0, 0, None)
    assert [s.name for s in specs] == ["seg", "slant", "count"] and specs[1] == SLANT
    assert len(train) == 20 and len(val) == 6  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match=r"no labels for task 'count' in .*partial"):
        training_data(str(folder / "train"), str(folder / "partial"), SIZE, 0, 0, 0, None)
    # no val split, no --val-data: a seeded hold-out that never overlaps the training samples
    train, val, _ = training_data(str(folder / "train"), None, SIZE, 0, 0, 0, None)
    assert (len(train), len(val)) == (18, 2)  # type: ignore[arg-type]
    held = _images(val)
    assert not any(torch.equal(h, t) for h in held for t in _images(train))


def test_validation_defaults_and_what_is_said_when_there_is_none(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    specs = [SCENE_TASKS[0], SLANT, LARGEST]
    calib, val = engine_data(specs, SIZE, str(folder), None, None, 8, 8, 7, 1000)
    assert val is not None and len(val) == 6 and labelled_tasks(val) == {"seg", "slant"}  # type: ignore[arg-type]
    assert len(calib) == 20 and labelled_tasks(calib) == {"seg", "slant"}  # type: ignore[arg-type]
    _, val = engine_data(specs, SIZE, str(folder), str(folder / "partial"), None, 8, 8, 7, 1000)
    assert val is not None and len(val) == 4  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING):
        calib, val = engine_data(specs, SIZE, None, None, None, 8, 8, 7, 1000)
    assert val is None and len(calib) == 8  # type: ignore[arg-type]
    assert "give --calib-data FOLDER" in caplog.text and "give --val-data FOLDER" in caplog.text
    # the scenes label every reference task: validated on held-out scenes as before
    _, val = engine_data(list(SCENE_TASKS), SIZE, None, None, None, 8, 8, 7, 1000)
    assert val is not None and labelled_tasks(val) == {t.name for t in SCENE_TASKS}
    with pytest.raises(DatasetError, match="labels for none of the model's tasks"):
        engine_data([LARGEST], SIZE, None, str(folder / "val"), None, 8, 8, 7, 1000)


def test_the_from_scratch_candidates_training_data_and_its_defaults(folder: Path, tmp_path: Path) -> None:
    scene = list(SCENE_TASKS)
    auto = training_source(scene, SIZE, None, None, tmp_path, 12, 0)
    assert auto is not None and auto.tasks == {s.name for s in scene}
    assert not list(tmp_path.iterdir())  # nothing rendered until a candidate needs it
    assert len(auto.data()) == 12 and auto.data() is auto.data()  # type: ignore[arg-type]
    assert training_source(scene, SIZE, "off", None, tmp_path, 12, 0) is None
    # a user's own calibration folder: no labelled data is assumed
    assert training_source(scene, SIZE, None, str(folder), tmp_path, 12, 0) is None
    # the user's tasks are not the scenes': synthetic scenes cannot label them
    mine = [SCENE_TASKS[0], SLANT, LARGEST]
    assert training_source(mine, SIZE, None, None, tmp_path, 12, 0) is None
    with pytest.raises(DatasetError, match="synthetic scenes do not label this model's tasks"):
        training_source(mine, SIZE, "synthetic", None, tmp_path, 12, 0)
    labelled = training_source(mine, SIZE, str(folder), None, tmp_path, 12, 0)
    assert labelled is not None and labelled.tasks == {"seg", "slant"} and len(labelled.data()) == 20  # type: ignore[arg-type]
    # the candidate must not be judged on the samples it trained on
    flat = tmp_path / "flat"
    write_scene_folder(flat, 6, 4, SIZE, ("seg", "slant"))
    with pytest.raises(DatasetError, match="judged on its own training samples"):
        training_source(mine, SIZE, str(flat), None, tmp_path, 12, 0, val_data=str(flat))
    with pytest.raises(DatasetError, match="labels none of the model's tasks"):
        training_source([LARGEST], SIZE, str(folder), None, tmp_path, 12, 0)


@pytest.mark.parametrize("layout", ["images-with-val-inside", "train-and-val"])
def test_both_documented_folder_layouts_train_calibrate_and_validate(
    layout: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 27: docs/models.md shows data/images/... with data/val/ inside; that was refused with
    "no split 'train' in data: found val". Both it and data/train/ + data/val/ work the same way."""
    root = tmp_path / "data"
    write_scene_folder(
        root if layout == "images-with-val-inside" else root / "train", 10, 1, SIZE, ("seg", "count")
    )
    write_scene_folder(root / "val", 4, 2, SIZE, ("seg", "count"))
    with caplog.at_level(logging.WARNING):
        train, val, specs = training_data(str(root), None, SIZE, 0, 0, 0, None)
    assert [s.name for s in specs] == ["seg", "count"]
    assert (len(train), len(val)) == (10, 4)  # type: ignore[arg-type]  # the val split, not a hold-out
    calib, val = engine_data(specs, SIZE, str(root), None, None, 8, 8, 7, 1000)
    assert (len(calib), len(val or [])) == (10, 4)  # type: ignore[arg-type]
    assert not any(torch.equal(c, v) for c in _images(calib) for v in _images(val))
    assert "ignoring" not in caplog.text  # val/ is a split, not an unknown task folder


def test_calibration_and_validation_never_read_the_same_images(tmp_path: Path) -> None:
    """A folder with no val/ split given as both calibration and validation data (the fallback when a
    model's training folder is gone): the build would be judged on the images it was calibrated on."""
    flat = tmp_path / "flat"
    write_scene_folder(flat, 9, 4, SIZE, ("seg", "slant"))
    specs = [SCENE_TASKS[0], SLANT]
    calib, val = engine_data(specs, SIZE, str(flat), str(flat), None, 8, 8, 7, 1000)
    assert val is not None and len(calib) + len(val) == 9 and min(len(calib), len(val)) >= 4  # type: ignore[arg-type]
    assert not any(torch.equal(c, v) for c in _images(calib) for v in _images(val))
    one = tmp_path / "one"
    write_scene_folder(one, 1, 5, SIZE, ("seg", "slant"))
    with pytest.raises(DatasetError, match="at least 2 are needed"):
        engine_data(specs, SIZE, str(one), str(one), None, 8, 8, 7, 1000)
