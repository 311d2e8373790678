"""gRPC adapter: FleetService (RequestModel, DownloadModel) and the standard health service.

The servicer only translates: requests become `BuildSpec`s for the `JobManager`, job events become
`JobProgress` messages, and store reads become `Chunk`s. Errors raised before a job exists end the
call with a gRPC status (mapped in error_map) plus the Error.Code name in the trailing metadata key
`edgecut-error-code`; a job that fails ends its stream with a FAILED `JobProgress` carrying an `Error`.

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

from edgecut.errors import ConfigError
from edgecut.server.errors import ServerError
from edgecut.server.fleet import error_map, wire
from edgecut.server.fleet.budget_policy import BudgetPolicy, budget_from_proto
from edgecut.server.fleet.jobs import Event, Failed, JobManager, Ready
from edgecut.server.fleet.store import Store, check_artifact_id
from edgecut.server.spec import BuildSpec
from edgecut.v1 import fleet_pb2 as pb
from edgecut.v1 import fleet_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

SERVICE_NAME = "edgecut.v1.FleetService"
DEFAULT_CHUNK = 256 * 1024
MAX_CHUNK = 2 * 1024 * 1024
MAX_REQUEST_BYTES = 64 * 1024
_FRAMING = 16 * 1024  # Chunk's other fields and protobuf tags
_POLL_S = 0.5  # how often a waiting stream checks that its client is still there


class FleetServicer(pb_grpc.FleetServiceServicer):
    def __init__(
        self,
        store: Store,
        jobs: JobManager | None,
        policy: BudgetPolicy,
        grpc_address: str,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> None:
        if not 1 <= chunk_size <= MAX_CHUNK:
            raise ConfigError(f"chunk_size={chunk_size} must be between 1 and {MAX_CHUNK} bytes")
        self.store, self.jobs, self.policy = store, jobs, policy
        self.grpc_address = grpc_address  # told to clients in ModelReady; set once the port is bound
        self.chunk_size = chunk_size

    def RequestModel(
        self, request: pb.ModelRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.JobProgress]:
        jobs = self.jobs
        if jobs is None:
            _abort(context, "INTERNAL", "this server only serves downloads", grpc.StatusCode.UNIMPLEMENTED)
        events: queue.Queue[Event] = queue.Queue()
        try:
            sub = jobs.submit(self._spec(request), listener=events.put)
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
            yield wire.job_progress(event, self.grpc_address, request.device_id)
            if isinstance(event, Ready | Failed):
                return

    def _spec(self, request: pb.ModelRequest) -> BuildSpec:
        explicit = request.HasField("budget") and request.budget.ByteSize() > 0
        budget = (
            budget_from_proto(request.budget) if explicit else self.policy.decide(request.resources).budget
        )
        return BuildSpec.create(list(request.tasks), budget, dict(request.priorities))

    def DownloadModel(self, request: pb.DownloadRequest, context: grpc.ServicerContext) -> Iterator[pb.Chunk]:
        """`chunk_size` pieces from `offset` to the end; to resume, ask again from a later offset."""
        try:
            aid = check_artifact_id(request.artifact_id)
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
        with self.store.open(aid, pos) as f:
            while pos < size and context.is_active():
                data = f.read(self.chunk_size)
                if not data:
                    break
                yield pb.Chunk(offset=pos, data=data, total_size=size, sha256=aid)
                pos += len(data)


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
) -> tuple[grpc.Server, int]:
    """A gRPC server with FleetService and health bound to `address` (port 0 = any), not yet started.

    Each open stream holds one worker thread, so `max_workers` bounds concurrent RPCs; more are
    refused with RESOURCE_EXHAUSTED instead of queueing without limit.
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
    pb_grpc.add_FleetServiceServicer_to_server(servicer, server)
    hs = health_servicer or health.HealthServicer()
    for name in ("", SERVICE_NAME):
        hs.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen for gRPC on {address!r}: {exc}") from exc
    if port == 0:
        raise ConfigError(f"cannot listen for gRPC on {address!r} (address in use or invalid)")
    return server, port
