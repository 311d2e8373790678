"""The device's model files: `<state_dir>/models/<artifact_id>.onnx` plus `models/state.json`.

Beside each model, `<artifact_id>.offer` keeps the signed offer it came with (checked before every
load, trust.py). state.json names the serving model (`current`), the one before it (`previous`,
kept for rollback), an operator's pin (`pinned`: offers are ignored while it is set, across
restarts) and the artifacts refused by validation (`bad`, so a retained ModelReady is not retried
in a loop). `serving` records, for the current and previous model, which file serves it (its own id
or a precision variant's, `<variant_id>.onnx`), in which precision and what each precision took when
the agent chose (precision.py): a restart or a rollback serves the precision that served. Every other
.onnx / .offer and every stale .part is pruned after a swap.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from pathlib import Path
from typing import Any

from .errors import FetchError
from .statefile import read_json, write_json

logger = logging.getLogger(__name__)

# Ids come from the network and become file names: allow no path separators or dots.
_ARTIFACT_ID = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
MAX_BAD = 32


def check_artifact_id(artifact_id: str) -> str:
    if not _ARTIFACT_ID.match(artifact_id):
        raise FetchError(f"refusing artifact id {artifact_id[:80]!r}: expected a hex sha256")
    return artifact_id


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


class ModelStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / "models"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._state_path = self.dir / "state.json"
        self._lock = threading.Lock()
        doc = read_json(self._state_path)
        doc = doc if isinstance(doc, dict) else {}
        self.current: str | None = doc.get("current") or None
        self.previous: str | None = doc.get("previous") or None
        self.bad: dict[str, str] = dict(doc.get("bad") or {})
        self.pinned: str | None = doc.get("pinned") or None
        served = doc.get("serving")
        self.serving: dict[str, dict[str, Any]] = (
            {str(k): v for k, v in served.items() if isinstance(v, dict)} if isinstance(served, dict) else {}
        )

    def path(self, artifact_id: str) -> Path:
        return self.dir / f"{check_artifact_id(artifact_id)}.onnx"

    def part_path(self, artifact_id: str) -> Path:
        return self.dir / f"{check_artifact_id(artifact_id)}.onnx.part"

    def offer_path(self, artifact_id: str) -> Path:
        return self.dir / f"{check_artifact_id(artifact_id)}.offer"

    def has(self, artifact_id: str) -> bool:
        return self.path(artifact_id).is_file()

    def _save(self) -> None:
        write_json(
            self._state_path,
            {
                "current": self.current,
                "previous": self.previous,
                "bad": self.bad,
                "pinned": self.pinned,
                "serving": self.serving,
            },
        )

    def served(self, artifact_id: str) -> dict[str, Any]:
        """How `artifact_id` was served: {"file", "precision", "timings"} ({} = its own fp32 file)."""
        return dict(self.serving.get(artifact_id) or {})

    def set_pin(self, artifact_id: str | None) -> None:
        """Pin `artifact_id` (None lifts the pin); persisted, so it holds across restarts."""
        with self._lock:
            self.pinned = artifact_id
            self._save()

    def record_swap(self, artifact_id: str, served: dict[str, Any] | None = None) -> None:
        """`artifact_id` now serves (from `served["file"]` when a variant does); the one it replaced
        becomes `previous`; older files go."""
        with self._lock:
            if artifact_id != self.current:
                self.previous, self.current = self.current, artifact_id
            if served is not None:
                self.serving[artifact_id] = served
            self.serving = {a: v for a, v in self.serving.items() if a in (self.current, self.previous)}
            self._save()
            self._prune()

    def set_served(self, artifact_id: str, served: dict[str, Any]) -> None:
        """How `artifact_id` serves now (a restart or rollback whose variant no longer loads: fp32)."""
        with self._lock:
            if artifact_id in (self.current, self.previous):
                # its statistics companion stays with it (a rollback must not drop it: fetched again)
                stats = (self.serving.get(artifact_id) or {}).get("statistics")
                self.serving[artifact_id] = {**served, "statistics": stats} if stats else served
                self._save()

    def keep_statistics(self, artifact_id: str, stats_id: str) -> None:
        """`stats_id` is `artifact_id`'s statistics companion (adapt.py): kept while the model is."""
        with self._lock:
            if artifact_id in (self.current, self.previous):
                self.serving.setdefault(artifact_id, {})["statistics"] = stats_id
                self._save()

    def record_rollback(self) -> None:
        with self._lock:
            self.current, self.previous = self.previous, self.current
            self._save()

    def mark_bad(self, artifact_id: str, reason: str) -> None:
        with self._lock:
            self.bad[artifact_id] = reason[:300]
            while len(self.bad) > MAX_BAD:  # dicts keep insertion order: forget the oldest
                self.bad.pop(next(iter(self.bad)))
            self._save()
        self.path(artifact_id).unlink(missing_ok=True)

    def discard(self, artifact_id: str) -> None:
        """Drop a downloaded file that failed its pre-load check (it is fetched again, not marked bad)."""
        self.path(artifact_id).unlink(missing_ok=True)

    def forget(self, artifact_id: str) -> None:
        """Drop a file that turned out unusable at start-up (e.g. corrupted on disk)."""
        with self._lock:
            if self.current == artifact_id:
                self.current, self.previous = self.previous, None
            elif self.previous == artifact_id:
                self.previous = None
            self.serving.pop(artifact_id, None)
            self._save()
        self.path(artifact_id).unlink(missing_ok=True)

    def _prune(self) -> None:
        keep = {f"{a}{ext}" for a in (self.current, self.previous) if a for ext in (".onnx", ".offer")}
        keep |= {f"{v.get('file')}.onnx" for v in self.serving.values() if v.get("file")}  # variants serving
        keep |= {f"{v.get('statistics')}.onnx" for v in self.serving.values() if v.get("statistics")}
        for p in self.dir.iterdir():
            if p.name.endswith((".onnx", ".onnx.part", ".offer")) and p.name not in keep:
                logger.debug("pruning %s", p.name)
                p.unlink(missing_ok=True)
