"""Where edgecut keeps its data: scenes cache, trained models, builds (one data dir, default .edgecut).

The reference model ships with the package (`mtl/pretrained/reference.pt`, provenance in
`reference.json` beside it), so a fresh clone tailors at once; `edgecut train` writes a model of its
own into the data dir, which then takes precedence.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATA_DIR = Path(os.environ.get("EDGECUT_DATA_DIR", ".edgecut"))
PACKAGED_REFERENCE = Path(__file__).parent / "mtl" / "pretrained" / "reference.pt"
# the same model trained at 128 x 128 (`make model-128`), for benchmarks at that size; used only when named
PACKAGED_REFERENCE_128 = PACKAGED_REFERENCE.with_name("reference-128.pt")


def trained_reference(data_dir: Path) -> Path:
    """Where `edgecut train` writes the reference model of this data dir."""
    return data_dir / "models" / "reference.pt"


def reference_checkpoint(data_dir: Path) -> Path:
    """The reference model to use: the data dir's own when one was trained, else the packaged one."""
    own = trained_reference(data_dir)
    return own if own.exists() else PACKAGED_REFERENCE


def scenes_cache(data_dir: Path) -> Path:
    return data_dir / "scenes"


CHECKPOINT_HELP = (
    "base model (default: DATA_DIR/models/reference.pt when trained, else the packaged reference)"
)
