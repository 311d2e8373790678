"""The artifact store on S3 or an S3-compatible server (MinIO, Ceph RGW, ...), through boto3.

URL: `s3://bucket/prefix`, optionally `?endpoint_url=http://minio:9000&region=us-east-1` for a server
other than AWS. Credentials are never part of the URL: boto3 reads them from its usual places
(`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, a profile, an instance role); `AWS_ENDPOINT_URL`
works too. The layout mirrors `LocalStore`::

    prefix/ab/abcdef...64hex.json   ModelMeta, written first
    prefix/ab/abcdef...64hex.onnx   the artifact; present = complete (an S3 PUT is atomic)

Devices never talk to S3: the server streams `DownloadModel` from a ranged GET, a chunk at a time, so
a replica holds one chunk of an artifact in memory, not the file.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlparse

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from edgecut.errors import ConfigError
from edgecut.model_meta import ModelMeta
from edgecut.server.errors import ArtifactNotFoundError, ServerError
from edgecut.server.fleet.state.store import (
    HASH_BLOCK,
    ID_PATTERN,
    VERIFY_TTL_S,
    StoredArtifact,
    check_artifact_id,
    sha256_file,
)

logger = logging.getLogger(__name__)

_MISSING = {"404", "NoSuchKey", "NotFound"}
_TRANSFER = TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=16 << 20, max_concurrency=4)


class StoreUnavailableError(ServerError):
    """The store could not be read or written (network, permissions); the detail is in the server log."""


class S3Store:
    """Artifacts under `s3://bucket/prefix`; see the module docstring."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client, self.bucket = client, bucket
        self.prefix = prefix.strip("/")
        # id -> (ETag, when) of its last good hash, reused for VERIFY_TTL_S while the object is the same
        self._verified: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ConfigError(f"store URL {url!r}: expected s3://bucket/prefix")
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        unknown = set(query) - {"endpoint_url", "region"}
        if unknown:
            raise ConfigError(
                f"store URL {url!r}: unknown option(s) {sorted(unknown)} (endpoint_url, region)"
            )
        endpoint = query.get("endpoint_url")
        config = Config(
            retries={"max_attempts": 5, "mode": "standard"},
            # S3-compatible servers are usually reached by address, where virtual-host buckets cannot work
            s3={"addressing_style": "path"} if endpoint else {},
            connect_timeout=10,
            read_timeout=60,
        )
        try:
            client = boto3.session.Session().client(
                "s3", endpoint_url=endpoint, region_name=query.get("region"), config=config
            )
            client.head_bucket(Bucket=parsed.netloc)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            why = "does not exist" if code in _MISSING else f"cannot be used ({code})"
            raise ConfigError(f"store {url!r}: bucket {parsed.netloc!r} {why}") from exc
        except BotoCoreError as exc:  # no credentials, endpoint unreachable, bad region
            raise ConfigError(f"store {url!r} is not reachable: {exc}") from exc
        return cls(client, parsed.netloc, parsed.path)

    def _key(self, artifact_id: str, suffix: str) -> str:
        aid = check_artifact_id(artifact_id)
        name = f"{aid[:2]}/{aid}{suffix}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def _head(self, artifact_id: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self.client.head_object(
                Bucket=self.bucket, Key=self._key(artifact_id, ".onnx")
            )
            return head
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in _MISSING:
                return None
            raise _unavailable("reading", artifact_id, exc) from exc
        except BotoCoreError as exc:
            raise _unavailable("reading", artifact_id, exc) from exc

    def put_file(self, path: Path, meta: ModelMeta) -> StoredArtifact:
        artifact_id = sha256_file(path)
        try:
            # Meta first: once the .onnx exists the artifact counts as present, so its meta must be there.
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(artifact_id, ".json"),
                Body=meta.to_json().encode(),
                ContentType="application/json",
            )
            if self._head(artifact_id) is None:
                self.client.upload_file(
                    str(path), self.bucket, self._key(artifact_id, ".onnx"), Config=_TRANSFER
                )
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("writing", artifact_id, exc) from exc
        return StoredArtifact(artifact_id, path.stat().st_size, meta)

    def exists(self, artifact_id: str) -> bool:
        try:
            return self._head(artifact_id) is not None
        except ArtifactNotFoundError:
            return False

    def size(self, artifact_id: str) -> int:
        head = self._head(artifact_id)
        if head is None:
            raise ArtifactNotFoundError(f"artifact {artifact_id} is not in the store")
        return int(head["ContentLength"])

    def meta(self, artifact_id: str) -> ModelMeta:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(artifact_id, ".json"))
            return ModelMeta.from_json(obj["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in _MISSING:
                raise ArtifactNotFoundError(f"artifact {artifact_id} has no metadata in the store") from exc
            raise _unavailable("reading", artifact_id, exc) from exc
        except BotoCoreError as exc:
            raise _unavailable("reading", artifact_id, exc) from exc

    def open(self, artifact_id: str, offset: int = 0) -> BinaryIO:
        if self._head(artifact_id) is None:
            raise ArtifactNotFoundError(f"artifact {artifact_id} is not in the store")
        raw = _RangeReader(self, self._key(artifact_id, ".onnx"), artifact_id, offset)
        return io.BufferedReader(raw, buffer_size=1 << 20)

    def get(self, artifact_id: str) -> StoredArtifact:
        return StoredArtifact(artifact_id, self.size(artifact_id), self.meta(artifact_id))

    def verify(self, artifact_id: str, force: bool = False) -> bool:
        """Hash the object as it streams (one block in memory); a mismatch is moved under quarantine/."""
        head = self._head(artifact_id)
        if head is None:
            return False
        etag, now = str(head.get("ETag", "")), time.monotonic()
        with self._lock:
            last = self._verified.get(artifact_id)
        if not force and last and last[0] == etag and now - last[1] < VERIFY_TTL_S:
            return True
        digest = hashlib.sha256()
        with self.open(artifact_id) as f:
            while block := f.read(HASH_BLOCK):
                digest.update(block)
        if digest.hexdigest() == artifact_id:
            with self._lock:
                self._verified[artifact_id] = (etag, now)
            return True
        self._quarantine(artifact_id)
        return False

    def _quarantine(self, artifact_id: str) -> None:
        with self._lock:
            self._verified.pop(artifact_id, None)
        key = self._key(artifact_id, ".onnx")
        dest = f"{self.prefix}/quarantine/{artifact_id}.{int(time.time())}".lstrip("/")
        try:
            self.client.copy_object(
                Bucket=self.bucket, Key=dest, CopySource={"Bucket": self.bucket, "Key": key}
            )
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("quarantining", artifact_id, exc) from exc
        logger.error(
            "artifact %s no longer matches its sha256: moved to %s; it is built again", artifact_id, dest
        )

    def ids(self) -> list[str]:
        prefix = f"{self.prefix}/" if self.prefix else ""
        found = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                for obj in page.get("Contents", []):
                    name = str(obj["Key"])[len(prefix) :]
                    head, _, leaf = name.partition("/")
                    stem = leaf.removesuffix(".onnx")
                    if leaf.endswith(".onnx") and ID_PATTERN.fullmatch(stem) and head == stem[:2]:
                        found.append(stem)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("listing", "*", exc) from exc
        return sorted(found)


class _RangeReader(io.RawIOBase):
    """Reads one object from `offset` on with a single ranged GET, opened at the first read."""

    def __init__(self, store: S3Store, key: str, artifact_id: str, offset: int) -> None:
        super().__init__()
        self._store, self._key, self._aid, self._offset = store, key, artifact_id, offset
        self._body: Any = None
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._eof:
            return 0
        if self._body is None:
            try:
                obj = self._store.client.get_object(
                    Bucket=self._store.bucket, Key=self._key, Range=f"bytes={self._offset}-"
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code", "") == "InvalidRange":  # offset == size
                    self._eof = True
                    return 0
                raise _unavailable("reading", self._aid, exc) from exc
            except BotoCoreError as exc:
                raise _unavailable("reading", self._aid, exc) from exc
            self._body = obj["Body"]
        try:
            data = self._body.read(len(buffer))
        except BotoCoreError as exc:
            raise _unavailable("reading", self._aid, exc) from exc
        if not data:
            self._eof = True
            return 0
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None
        super().close()


def _unavailable(doing: str, artifact_id: str, exc: Exception) -> StoreUnavailableError:
    logger.error("artifact store: %s %s failed: %s", doing, artifact_id[:12], exc)
    return StoreUnavailableError(
        f"the artifact store failed while {doing} artifact {artifact_id[:12]}; try again later"
    )
