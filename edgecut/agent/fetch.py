"""Download an artifact over gRPC (FleetService.DownloadModel) into the model store.

Resume contract: bytes go to `<id>.onnx.part`; the part file's size *is* the resume offset, so a
dropped stream, a killed server or a restarted agent all continue with `DownloadRequest(offset=
size of .part)`. Chunks must arrive contiguous from that offset. Only when the file is complete and
hashes to the announced sha256 is it renamed to `<id>.onnx` (atomic), so nothing unverified is
ever loaded; a mismatch deletes the part file.

A full disk (ENOSPC, EDQUOT) while writing deletes the part file too — it cannot continue, and the
space is better given back to the device — and raises DiskSpaceError; the agent reports it and
retries later. Attempts here are bounded; the agent's own retry loop is not (agent.py).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from pathlib import Path

import grpc

from edgecut.v1 import fleet_pb2, fleet_pb2_grpc

from .artifacts import ModelStore, sha256_file
from .errors import ArtifactGone, ChecksumError, DiskSpaceError, FetchError

logger = logging.getLogger(__name__)

# Errors that a retry cannot fix; anything else (UNAVAILABLE, a dropped stream, ...) is retried.
_FATAL = {
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.UNIMPLEMENTED,
}
DISK_MARGIN = 16 << 20  # leave room for the state files and logs
_CHANNEL_OPTIONS = [("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000)]


def check_disk(directory: Path, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    if needed + DISK_MARGIN > free:
        raise DiskSpaceError(
            f"artifact needs {needed / 1e6:.1f} MB but {directory} has {free / 1e6:.1f} MB free "
            f"(keeping {DISK_MARGIN >> 20} MB spare)"
        )


def open_channel(address: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
    if credentials is None:
        return grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
    return grpc.secure_channel(address, credentials, options=_CHANNEL_OPTIONS)


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class Downloader:
    """Fetches artifacts from one gRPC address; safe to reuse, one download at a time."""

    def __init__(
        self,
        address: str,
        device_id: str,
        credentials: grpc.ChannelCredentials | None = None,
        max_attempts: int = 6,
        backoff_s: float = 0.5,
        call_timeout_s: float = 600.0,
    ) -> None:
        self.address = address
        self.device_id = device_id
        self.credentials = credentials
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.call_timeout_s = call_timeout_s
        self.resumes = 0  # how many times a download continued from a non-zero offset

    def fetch(self, store: ModelStore, artifact_id: str, sha256: str, size: int = 0) -> Path:
        """The verified file for `artifact_id`, downloaded (or resumed) when not already on disk."""
        expected = (sha256 or artifact_id).lower()
        final = store.path(artifact_id)
        if final.is_file():
            if sha256_file(final) == expected:
                return final
            final.unlink()
        part = store.part_path(artifact_id)
        offset = part.stat().st_size if part.exists() else 0
        if size and offset > size:
            part.unlink()
            offset = 0
        if size:
            check_disk(store.dir, size - offset)
        try:
            with open_channel(self.address, self.credentials) as channel:
                total = self._download(
                    fleet_pb2_grpc.FleetServiceStub(channel), artifact_id, expected, part, size
                )
        except ChecksumError:
            part.unlink(missing_ok=True)  # a server announcing other bytes: nothing of it is kept
            raise
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                freed = part.stat().st_size if part.exists() else 0
                part.unlink(missing_ok=True)  # cannot continue: give the space back to the device
                raise DiskSpaceError(
                    f"disk full in {store.dir} while downloading {artifact_id[:12]} "
                    f"({os.strerror(exc.errno or 0)}); removed the {freed}-byte partial file, will retry"
                ) from exc
            raise FetchError(f"cannot write {part.name}: {exc.strerror or exc}") from exc
        digest = sha256_file(part)
        if digest != expected:
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"artifact {artifact_id[:12]} hashes to {digest[:12]}, not {expected[:12]}: "
                "refused, not loaded"
            )
        os.replace(part, final)
        logger.info("artifact %s downloaded and verified (%d bytes)", artifact_id[:12], total)
        return final

    def _download(
        self, stub: fleet_pb2_grpc.FleetServiceStub, artifact_id: str, expected: str, part: Path, size: int
    ) -> int:
        attempts = 0
        total = size
        while True:
            offset = part.stat().st_size if part.exists() else 0
            if total and offset >= total:
                return total
            if offset:
                self.resumes += 1
                logger.info("resuming %s at byte %d", artifact_id[:12], offset)
            request = fleet_pb2.DownloadRequest(
                artifact_id=artifact_id, offset=offset, device_id=self.device_id
            )
            start_offset = offset
            try:
                with open(part, "ab") as f:
                    for chunk in stub.DownloadModel(request, timeout=self.call_timeout_s):
                        if chunk.sha256 and chunk.sha256.lower() != expected:
                            raise ChecksumError(
                                f"server offers sha256 {chunk.sha256[:12]} for {artifact_id[:12]}, "
                                f"expected {expected[:12]}: refused"
                            )
                        if chunk.offset != offset:
                            raise FetchError(f"server sent offset {chunk.offset}, expected {offset}")
                        if chunk.total_size:
                            if size and chunk.total_size != size:
                                raise ChecksumError(
                                    f"server says {chunk.total_size} bytes, ModelReady said {size}: refused"
                                )
                            if not total:
                                check_disk(part.parent, chunk.total_size - offset)
                            total = chunk.total_size
                        f.write(chunk.data)
                        offset += len(chunk.data)
                    f.flush()
                    os.fsync(f.fileno())
                if total and offset >= total:
                    return total
                if not total and offset > start_offset:
                    return offset  # a server that never states the size: a clean end is the end
                reason = f"stream ended at byte {offset} of {total or '?'}"
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
                details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
                if code == grpc.StatusCode.NOT_FOUND:
                    raise ArtifactGone(
                        f"download of {artifact_id[:12]} failed: NOT_FOUND: {details}"
                    ) from exc
                if code in _FATAL:
                    raise FetchError(
                        f"download of {artifact_id[:12]} failed: {code.name}: {details}"
                    ) from exc
                reason = f"{code.name}: {details}"
            attempts = 0 if offset > start_offset else attempts + 1  # progress earns a fresh budget
            if attempts >= self.max_attempts:
                raise FetchError(
                    f"download of {artifact_id[:12]} from {self.address} failed {attempts} times; "
                    f"last: {reason}"
                )
            delay = min(self.backoff_s * 2**attempts, 10.0)
            logger.warning("download interrupted (%s); retrying in %.1fs", reason, delay)
            time.sleep(delay)
