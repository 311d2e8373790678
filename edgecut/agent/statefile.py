"""Crash-safe writes in the state dir: a temp file in the same directory, fsync, then os.replace."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never a torn one (os.replace is atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """The rename itself reaches the disk (else a power cut can bring the old file back)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


def write_json(path: Path, doc: Any) -> None:
    atomic_write(path, json.dumps(doc, indent=2, sort_keys=True).encode())


def read_json(path: Path) -> Any | None:
    """The document, or None when the file is missing or unreadable (a fresh state)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
