"""Content-addressed artifact store: an artifact's id is the sha256 hex of its bytes.

`Store` is the interface the service uses (jobs write, DownloadModel reads); `LocalStore` keeps
files under a directory, `store_s3.S3Store` in an S3 bucket (ranged GETs behind `open(artifact_id,
offset)`). A backend is chosen by the scheme of a URL in store_backends.py.

Layout of a `LocalStore`::

    root/ab/abcdef...64hex.onnx   the artifact (ModelMeta embedded in its ONNX metadata)
    root/ab/abcdef...64hex.json   ModelMeta sidecar, so listing/serving never parses ONNX
    root/quarantine/<id>.<time>   artifacts whose bytes no longer hash to their id (kept for a post-mortem)

Bit rot: `verify(id)` hashes the file (remembering the result while its size and mtime stay the same,
so a cache hit for a thousand devices hashes it once); a mismatch is moved to quarantine, which makes
the artifact absent, so the next request builds it again. `ids()` lists everything for a periodic scrub.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from edgecut.model_meta import ModelMeta
from edgecut.server.errors import ArtifactNotFoundError

logger = logging.getLogger(__name__)

ID_PATTERN = re.compile(r"[0-9a-f]{64}")
VERIFY_TTL_S = 300.0
HASH_BLOCK = 1 << 20


def check_artifact_id(artifact_id: str) -> str:
    """Return the id when it is 64 lowercase hex digits; anything else could name a path outside the store."""
    if not isinstance(artifact_id, str) or not ID_PATTERN.fullmatch(artifact_id):
        raise ArtifactNotFoundError(
            f"artifact id {artifact_id!r:.80} is not a sha256 hex digest (64 characters 0-9a-f)"
        )
    return artifact_id


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class StoredArtifact:
    artifact_id: str  # = sha256 of the bytes
    size: int
    meta: ModelMeta

    @property
    def sha256(self) -> str:
        return self.artifact_id


class Store(Protocol):
    """What the fleet service needs from an artifact store."""

    def put_file(self, path: Path, meta: ModelMeta) -> StoredArtifact:
        """Copy `path` in under its sha256 (idempotent) and keep `meta` beside it."""
        ...

    def exists(self, artifact_id: str) -> bool: ...

    def size(self, artifact_id: str) -> int: ...

    def meta(self, artifact_id: str) -> ModelMeta: ...

    def open(self, artifact_id: str, offset: int = 0) -> BinaryIO:
        """A binary reader positioned at `offset`; raises ArtifactNotFoundError."""
        ...

    def get(self, artifact_id: str) -> StoredArtifact: ...

    def verify(self, artifact_id: str, force: bool = False) -> bool:
        """True when the bytes hash to the id; a mismatch is quarantined (the artifact becomes absent).

        A recent good result may be reused unless `force` (a device reported bad bytes; a scrub).
        """
        ...

    def ids(self) -> list[str]:
        """Every artifact id held (for a scrub)."""
        ...


class LocalStore:
    """Artifacts in a local directory; writes are atomic (temp file + rename in the same directory)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # id -> (size, mtime_ns, when) of its last good hash: reused for VERIFY_TTL_S while the file looks
        # the same (bit rot does not change size or mtime, hence the time limit, the scrub and `force`)
        self._verified: dict[str, tuple[int, int, float]] = {}
        self._lock = threading.Lock()

    def _path(self, artifact_id: str, suffix: str) -> Path:
        aid = check_artifact_id(artifact_id)
        return self.root / aid[:2] / f"{aid}{suffix}"

    def put_file(self, path: Path, meta: ModelMeta) -> StoredArtifact:
        artifact_id = sha256_file(path)
        target = self._path(artifact_id, ".onnx")
        target.parent.mkdir(parents=True, exist_ok=True)
        # Sidecar first: once the .onnx exists the artifact counts as present, so its meta must be there.
        _atomic_write(target.with_suffix(".json"), meta.to_json().encode())
        if not target.exists():
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
            try:
                with os.fdopen(fd, "wb") as out, path.open("rb") as src:
                    shutil.copyfileobj(src, out, HASH_BLOCK)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return StoredArtifact(artifact_id, target.stat().st_size, meta)

    def exists(self, artifact_id: str) -> bool:
        try:
            return self._path(artifact_id, ".onnx").is_file()
        except ArtifactNotFoundError:
            return False

    def size(self, artifact_id: str) -> int:
        try:
            return self._path(artifact_id, ".onnx").stat().st_size
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(f"artifact {artifact_id} is not in the store") from exc

    def meta(self, artifact_id: str) -> ModelMeta:
        try:
            return ModelMeta.from_json(self._path(artifact_id, ".json").read_bytes())
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(f"artifact {artifact_id} has no metadata in the store") from exc

    def open(self, artifact_id: str, offset: int = 0) -> BinaryIO:
        try:
            f = self._path(artifact_id, ".onnx").open("rb")
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(f"artifact {artifact_id} is not in the store") from exc
        f.seek(offset)
        return f

    def get(self, artifact_id: str) -> StoredArtifact:
        return StoredArtifact(artifact_id, self.size(artifact_id), self.meta(artifact_id))

    def verify(self, artifact_id: str, force: bool = False) -> bool:
        path = self._path(artifact_id, ".onnx")
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        now = time.monotonic()
        with self._lock:
            last = self._verified.get(artifact_id)
        if not force and last and last[:2] == (st.st_size, st.st_mtime_ns) and now - last[2] < VERIFY_TTL_S:
            return True
        if sha256_file(path) == artifact_id:
            with self._lock:
                self._verified[artifact_id] = (st.st_size, st.st_mtime_ns, now)
            return True
        self._quarantine(artifact_id, path)
        return False

    def _quarantine(self, artifact_id: str, path: Path) -> None:
        with self._lock:
            self._verified.pop(artifact_id, None)
        dest = self.root / "quarantine" / f"{artifact_id}.{int(time.time())}"
        dest.parent.mkdir(exist_ok=True)
        try:
            os.replace(path, dest)
        except FileNotFoundError:
            return  # another thread moved it first
        logger.error(
            "artifact %s no longer matches its sha256: moved to %s; it is built again", artifact_id, dest
        )

    def ids(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("??/*.onnx") if ID_PATTERN.fullmatch(p.stem))


def _atomic_write(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
