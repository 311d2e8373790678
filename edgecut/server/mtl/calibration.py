"""Which images a model is calibrated on (BatchNorm re-estimation, channel scoring, recovery) by default:
the data it was trained on, never silently someone else's.

`edgecut train` records its data in the checkpoint (`trained_on`: "synthetic", or the folder's absolute
path and a digest of its files). Prune and the server then use, in order: `--calib-data` (a folder, or
"synthetic" by name), the recorded data, `--val-data`'s images; a model with none of them is refused.
A checkpoint from before the record that `edgecut train` made on synthetic scenes (the packaged
reference) counts as trained on them.

A recorded folder whose files changed since training is used as it is now, with a warning: calibration
needs images like the model's own, not the exact training set, and a folder that grew or was cleaned
still holds them; refusing would make every added image cost a retrain. A folder that is gone is
refused (or replaced by `--val-data`'s images, with a warning): there is nothing of the user's to use.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecut.server.errors import DatasetError
from edgecut.server.mtl.sources import SYNTHETIC, is_synthetic

logger = logging.getLogger(__name__)

RECORD = "trained_on"  # the checkpoint key


def folder_digest(root: Path) -> str:
    """sha256 over every file under `root` (relative path, size and bytes; hidden files skipped)."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        h.update(f"{rel.as_posix()}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()


def folder_listing(root: Path) -> str:
    """sha256 over every file's relative path, size and modification time: cheap to take at each start;
    when it matches the training record the files' bytes are not read again."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        st = path.stat()
        h.update(f"{rel.as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return "sha256:" + h.hexdigest()


def training_record(data: str) -> dict[str, str]:
    """What a checkpoint records of its training data (see the module docstring)."""
    if is_synthetic(data):
        return {"data": SYNTHETIC}
    root = Path(data).resolve()
    return {"data": str(root), "digest": folder_digest(root), "listing": folder_listing(root)}


def _unchanged(root: Path, record: dict[str, Any]) -> bool:
    if record.get("listing") and folder_listing(root) == record["listing"]:
        return True  # same names, sizes and times: the bytes are not hashed again (a large folder)
    return folder_digest(root) == record.get("digest")


@dataclass(frozen=True)
class Calibration:
    source: str  # "synthetic" or a folder
    why: str  # for the user: where it came from


def calibration_source(
    doc: dict[str, Any], name: str, calib_data: str | None, val_data: str | None
) -> Calibration:
    """The calibration images for the checkpoint `doc` (called `name` in messages); see the module doc."""
    if calib_data:
        named = "edgecut's synthetic scenes" if is_synthetic(calib_data) else calib_data
        return Calibration(calib_data, f"{named}, given by --calib-data")
    record = doc.get(RECORD)
    config = doc.get("train_config")
    if not isinstance(record, dict) and isinstance(config, dict) and is_synthetic(config.get("data")):
        record = {"data": SYNTHETIC}  # trained by `edgecut train` on scenes before the record existed
    if isinstance(record, dict) and record.get("data"):
        data = str(record["data"])
        if is_synthetic(data):
            return Calibration(SYNTHETIC, f"the synthetic scenes {name} was trained on")
        root = Path(data)
        if root.is_dir():
            try:
                unchanged = _unchanged(root, record)
            except OSError as exc:
                raise DatasetError(
                    f"{root}, the folder {name} was trained on, cannot be read ({exc.strerror or exc}): "
                    "fix its permissions or pass --calib-data FOLDER"
                ) from exc
            if not unchanged:
                logger.warning(
                    "%s changed since %s was trained on it: calibrating on its images as they are now "
                    "(pass --calib-data FOLDER to choose others)",
                    root,
                    name,
                )
            return Calibration(str(root), f"{root}, the folder {name} was trained on")
        if val_data:
            logger.warning(
                "%s, the folder %s was trained on, is gone: calibrating on --val-data's images (%s)",
                root,
                name,
                val_data,
            )
            return Calibration(val_data, f"--val-data's images ({root}, its training folder, is gone)")
        raise DatasetError(
            f"{root}, the folder {name} was trained on, is gone: pass --calib-data FOLDER with images like "
            "the ones it was trained on (or --val-data FOLDER)"
        )
    if val_data:
        return Calibration(val_data, "--val-data's images")
    hint = ""
    if isinstance(config, dict) and config.get("data"):
        hint = f" (it was trained on {config['data']!r}, relative to where `edgecut train` ran)"
    raise DatasetError(
        f"{name} does not record which images its model was trained on{hint}: pass --calib-data FOLDER "
        "with images like them (or --calib-data synthetic to calibrate on edgecut's synthetic scenes)"
    )
