"""gRPC adapter: FleetService (RequestModel, DownloadModel) and the standard health service.

The servicer only translates: requests become `BuildSpec`s for the `JobManager` (checked in
requests.py), job events become `JobProgress` messages (a READY one carries a signed manifest for the
caller), and store reads become `Chunk`s. Errors raised before a job exists end the call with a gRPC
status (mapped in error_map) plus the Error.Code name in the trailing metadata key
`edgecut-error-code`; a job that fails ends its stream with a FAILED `JobProgress` carrying an `Error`.
Bytes that do not parse as the request type are INVALID_ARGUMENT (rpc_guard), never INTERNAL.

Identity: with mutual TLS (`grpc_client_ca`), the caller's certificate names the device. Its
RequestModel is answered for that device whatever `device_id` the request claims (READY carries an
offer signed for it), and DownloadModel serves it only artifacts the fleet offered to it (the model, or a variant its
signed offer listed, or the model's statistics companion). Without
mutual TLS the claimed id is all there is: rate limits key on it (or on the peer's address when it
is empty), and READY carries the offer *unsigned*, which no agent acts on (docs/security.md).

Message sizes are limited on purpose: requests are small (64 KiB cap) and a response is at most one
chunk plus a little framing, with chunks capped at 2 MiB so clients keep gRPC's default 4 MiB limit.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from edgecut import rpc_guard, tls
from edgecut.envelopes import now_ms
from edgecut.errors import ConfigError
from edgecut.server.errors import PermissionDeniedError, ServerError
from edgecut.server.fleet import error_map
from edgecut.server.fleet.events import FleetEvent, Observers
from edgecut.server.fleet.jobs.manager import JobManager
from edgecut.server.fleet.jobs.outcomes import Event, Failed, Ready
from edgecut.server.fleet.link import requests, wire
from edgecut.server.fleet.link.signer import FleetSigner, plain_offer
from edgecut.server.fleet.link.variants import statistics_for, variants_for
from edgecut.server.fleet.policy.budget import BudgetPolicy
from edgecut.server.fleet.policy.limits import RateLimiter
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.store import Store, check_artifact_id
from edgecut.v1 import fleet_pb2 as pb

logger = logging.getLogger(__name__)

SERVICE_NAME = "edgecut.v1.FleetService"
DEFAULT_CHUNK = 256 * 1024
MAX_CHUNK = 2 * 1024 * 1024
MAX_REQUEST_BYTES = 64 * 1024
_FRAMING = 16 * 1024  # Chunk's other fields and protobuf tags
_POLL_S = 0.5  # how often a waiting stream checks that its client is still there


class FleetServicer:
    def __init__(
        self,
        store: Store,
        jobs: JobManager | None,
        policy: BudgetPolicy,
        grpc_address: str,
        chunk_size: int = DEFAULT_CHUNK,
        signer: FleetSigner | None = None,
        registry: Registry | None = None,
        request_limiter: RateLimiter | None = None,
        mutual_tls: bool = False,
        observers: Observers | None = None,
    ) -> None:
        if not 1 <= chunk_size <= MAX_CHUNK:
            raise ConfigError(f"chunk_size={chunk_size} must be between 1 and {MAX_CHUNK} bytes")
        if jobs is not None and signer is None:
            raise ConfigError("a servicer that builds models needs the fleet signer to sign its offers")
        if mutual_tls and registry is None:
            raise ConfigError("mutual TLS needs the registry to check which artifacts a device was offered")
        self.store, self.jobs, self.policy = store, jobs, policy
        self.observers = observers or Observers()
        self.grpc_address = grpc_address  # told to clients in ModelReady; set once the port is bound
        self.chunk_size = chunk_size
        self.signer, self.registry = signer, registry
        self.request_limiter, self.mutual_tls = request_limiter, mutual_tls

    def _caller(self, claimed: str, context: grpc.ServicerContext) -> str:
        """The device id to act for: the certificate's under mutual TLS, else the claimed one."""
        if not self.mutual_tls:
            return claimed
        identity = tls.peer_identity(context)
        if not identity:  # the TLS layer already refuses clients without a certificate; belt and braces
            _abort(
                context,
                "PERMISSION_DENIED",
                "a client certificate is required",
                grpc.StatusCode.UNAUTHENTICATED,
            )
        if claimed and claimed != identity:
            _abort(
                context,
                "PERMISSION_DENIED",
                f"certificate is for device {identity!r}, the request claims {claimed[:64]!r}",
            )
        return identity

    def RequestModel(
        self, request: pb.ModelRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.JobProgress]:
        jobs = self.jobs
        if jobs is None:
            _abort(context, "INTERNAL", "this server only serves downloads", grpc.StatusCode.UNIMPLEMENTED)
        device_id = self._caller(request.device_id, context)
        requester = device_id or _peer_host(context)
        events: queue.Queue[Event] = queue.Queue()
        try:
            if self.request_limiter is not None:
                self.request_limiter.check(requester, "model requests")
            sub = jobs.submit(
                requests.request_spec(self.policy, request), listener=events.put, requester=requester
            )
        except ServerError as exc:
            _abort(context, error_map.error_code(exc), error_map.error_sentence(exc))
        # A client that goes away stops receiving events; the job itself goes on for the others.
        context.add_callback(lambda: jobs.detach(sub.build_key, events.put))
        while True:
            try:
                event = events.get(timeout=_POLL_S)
            except queue.Empty:
                if not context.is_active():
                    return
                continue
            if isinstance(event, Ready):
                yield self._ready(event, device_id)
                return
            yield wire.job_progress(event, device_id)
            if isinstance(event, Failed):
                return

    def _ready(self, ready: Ready, device_id: str) -> pb.JobProgress:
        """READY with an offer signed for the caller's device when its certificate proves the id; else
        unsigned (no agent acts on it), so no caller obtains the fleet's signature for another device."""
        if not (self.mutual_tls and device_id):
            return wire.ready_progress(ready, plain_offer(ready, self.grpc_address, device_id))
        assert self.signer is not None and self.registry is not None  # checked in __init__
        offer_seq = self.registry.offers.next_seq(device_id, now_ms())
        variants = variants_for(self.store, self.registry, ready.artifact, device_id)
        stats = statistics_for(self.store, self.registry, ready.artifact)
        msg, manifest = self.signer.offer(ready, self.grpc_address, device_id, 0, offer_seq, variants, stats)
        self.registry.offers.record(
            device_id,
            ready.build_key,
            msg.artifact_id,
            0,
            wire.to_dict(manifest),
            [v.artifact_id for v in variants] + ([stats.artifact_id] if stats else []),
        )
        return wire.ready_progress(ready, msg)

    def DownloadModel(self, request: pb.DownloadRequest, context: grpc.ServicerContext) -> Iterator[pb.Chunk]:
        """`chunk_size` pieces from `offset` to the end; to resume, ask again from a later offset."""
        device_id = self._caller(request.device_id, context)
        try:
            aid = check_artifact_id(request.artifact_id)
            if self.mutual_tls and not (self.registry and self.registry.offers.was_offered(device_id, aid)):
                raise PermissionDeniedError(f"artifact {aid[:12]} was never offered to device {device_id!r}")
            size = self.store.size(aid)
        except ServerError as exc:
            _abort(context, error_map.error_code(exc), error_map.error_sentence(exc))
        if request.offset > size:
            _abort(
                context,
                "NOT_FOUND",
                f"offset {request.offset} is past the end of artifact {aid} ({size} bytes)",
                grpc.StatusCode.OUT_OF_RANGE,
            )
        pos = request.offset
        try:
            with self.store.open(aid, pos) as f:
                while pos < size and context.is_active():
                    data = f.read(self.chunk_size)
                    if not data:
                        break
                    yield pb.Chunk(offset=pos, data=data, total_size=size, sha256=aid)
                    pos += len(data)
        finally:  # also when the client goes away mid-stream: the bytes sent so far still count
            self.observers.emit(
                FleetEvent(
                    "download",
                    device_id,
                    {
                        "artifact_id": aid,
                        "offset": request.offset,
                        "bytes": pos - request.offset,
                        "complete": pos >= size,
                    },
                )
            )


def _peer_host(context: grpc.ServicerContext) -> str:
    """`ipv4:127.0.0.1:5555` -> `ipv4:127.0.0.1`: rate limits for anonymous callers key on the host."""
    return context.peer().rsplit(":", 1)[0]


def _abort(
    context: grpc.ServicerContext, code: str, message: str, status: grpc.StatusCode | None = None
) -> NoReturn:
    context.set_trailing_metadata(((error_map.CODE_METADATA_KEY, code),))
    context.abort(status or error_map.grpc_status(code), message)
    raise RuntimeError("grpc context.abort returned")  # it raises; this keeps the type checker honest


def create_server(
    address: str,
    servicer: FleetServicer,
    max_workers: int = 64,
    health_servicer: health.HealthServicer | None = None,
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.Server, int]:
    """A gRPC server with FleetService and health bound to `address` (port 0 = any), not yet started.

    Each open stream holds one worker thread, so `max_workers` bounds concurrent RPCs; more are
    refused with RESOURCE_EXHAUSTED instead of queueing without limit. `credentials` = TLS (tls.py).
    """
    options = [
        ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
        ("grpc.max_send_message_length", servicer.chunk_size + _FRAMING),
        ("grpc.so_reuseport", 0),  # a second server on the same port is a mistake, not a replica
    ]
    server = grpc.server(
        ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="edgecut-grpc"),
        options=options,
        maximum_concurrent_rpcs=max_workers,
    )
    server.add_generic_rpc_handlers(
        (rpc_guard.generic_handler(pb.DESCRIPTOR.services_by_name["FleetService"], servicer),)
    )
    hs = health_servicer or health.HealthServicer()
    for name in ("", SERVICE_NAME):
        hs.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    try:
        port = (
            server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        )
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen for gRPC on {address!r}: {exc}") from exc
    if port == 0:
        raise ConfigError(f"cannot listen for gRPC on {address!r} (address in use or invalid)")
    return server, port
