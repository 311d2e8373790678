"""Which images a model is calibrated on by default (issue 27): the data it was trained on, never
silently edgecut's synthetic scenes."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from edgecut.server.errors import DatasetError
from edgecut.server.mtl.calibration import (
    RECORD,
    calibration_source,
    folder_digest,
    folder_listing,
    training_record,
)
from edgecut_bench.scene_folder import write_scene_folder


@pytest.fixture
def data(tmp_path: Path) -> Path:
    write_scene_folder(tmp_path / "data", 3, 1, 8, ("seg", "count"))
    write_scene_folder(tmp_path / "data" / "val", 2, 2, 8, ("seg", "count"))
    return tmp_path / "data"


def test_the_record_names_the_folder_and_a_digest_of_every_file(data: Path) -> None:
    record = training_record(str(data))
    assert record == {
        "data": str(data.resolve()),
        "digest": folder_digest(data),
        "listing": folder_listing(data),
    }
    assert training_record("synthetic") == {"data": "synthetic"}
    before = folder_digest(data)
    (data / ".DS_Store").write_bytes(b"x")  # hidden files are not data
    assert folder_digest(data) == before
    image = next((data / "val" / "images").iterdir())
    image.write_bytes(image.read_bytes()[:-1] + b"\0")  # one byte of a val image
    assert folder_digest(data) != before


def test_a_model_is_calibrated_on_the_folder_it_was_trained_on(data: Path) -> None:
    doc = {RECORD: training_record(str(data))}
    chosen = calibration_source(doc, "tiny.pt", None, "elsewhere")
    assert chosen.source == str(data.resolve()) and "the folder tiny.pt was trained on" in chosen.why
    # asked for by name or by folder, that wins
    assert calibration_source(doc, "tiny.pt", "synthetic", None).source == "synthetic"
    assert calibration_source(doc, "tiny.pt", "other", None).source == "other"


def test_a_changed_folder_is_used_with_a_warning(data: Path, caplog: pytest.LogCaptureFixture) -> None:
    doc = {RECORD: training_record(str(data))}
    with caplog.at_level(logging.WARNING):
        assert calibration_source(doc, "tiny.pt", None, None).source == str(data.resolve())
    assert caplog.text == ""
    write_scene_folder(data, 4, 3, 8, ("seg", "count"))  # a fourth image added since training
    with caplog.at_level(logging.WARNING):
        assert calibration_source(doc, "tiny.pt", None, None).source == str(data.resolve())
    assert f"{data.resolve()} changed since tiny.pt was trained on it" in caplog.text


def test_a_gone_folder_is_refused_unless_val_data_gives_images(
    data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    doc = {RECORD: training_record(str(data))}
    shutil.rmtree(data)
    with pytest.raises(DatasetError) as refused:
        calibration_source(doc, "tiny.pt", None, None)
    assert str(refused.value) == (
        f"{data.resolve()}, the folder tiny.pt was trained on, is gone: pass --calib-data FOLDER with images "
        "like the ones it was trained on (or --val-data FOLDER)"
    )
    with caplog.at_level(logging.WARNING):
        assert calibration_source(doc, "tiny.pt", None, "val").source == "val"
    assert "is gone: calibrating on --val-data's images (val)" in caplog.text


def test_without_a_record_only_the_scene_trained_reference_gets_synthetic_scenes() -> None:
    # the packaged reference: `edgecut train` on scenes, before the record (its config has no data key)
    assert calibration_source({"train_config": {"arch": "resnet-mtl"}}, "ref.pt", None, None).source == (
        "synthetic"
    )
    assert calibration_source({"train_config": {"data": "synthetic"}}, "ref.pt", None, None).source == (
        "synthetic"
    )
    # weights trained elsewhere: --val-data's images, else refused
    assert calibration_source({}, "mine.pt", None, "val").source == "val"
    with pytest.raises(DatasetError) as refused:
        calibration_source({}, "mine.pt", None, None)
    assert str(refused.value) == (
        "mine.pt does not record which images its model was trained on: pass --calib-data FOLDER with images "
        "like them (or --calib-data synthetic to calibrate on edgecut's synthetic scenes)"
    )
    # an older `edgecut train` on a folder: the path it was given is named, relative to where it ran
    with pytest.raises(DatasetError, match="it was trained on 'data', relative to where `edgecut train` ran"):
        calibration_source({"train_config": {"data": "data"}}, "old.pt", None, None)


def test_an_unchanged_folder_is_not_read_again_and_an_unreadable_one_is_one_sentence(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = {RECORD: training_record(str(data))}

    def unread(root: Path) -> str:
        raise AssertionError("the files' bytes were hashed again although nothing changed")

    monkeypatch.setattr("edgecut.server.mtl.calibration.folder_digest", unread)
    assert calibration_source(doc, "tiny.pt", None, None).source == str(data.resolve())
    monkeypatch.undo()
    image = next((data / "images").iterdir())
    image.write_bytes(image.read_bytes())  # touched: the listing differs, the bytes are hashed
    monkeypatch.setattr(
        "edgecut.server.mtl.calibration.folder_digest",
        lambda root: (_ for _ in ()).throw(PermissionError(13, "Permission denied")),
    )
    with pytest.raises(
        DatasetError, match=r"the folder tiny.pt was trained on, cannot be read \(Permission denied\)"
    ):
        calibration_source(doc, "tiny.pt", None, None)
