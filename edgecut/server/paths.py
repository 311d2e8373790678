"""Where edgecut keeps its data: scenes cache, trained models, builds (one data dir, default .edgecut)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATA_DIR = Path(os.environ.get("EDGECUT_DATA_DIR", ".edgecut"))


def reference_checkpoint(data_dir: Path) -> Path:
    return data_dir / "models" / "reference.pt"


def scenes_cache(data_dir: Path) -> Path:
    return data_dir / "scenes"
