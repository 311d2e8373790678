"""The local inference API: a thin gRPC adapter (AgentService) over the agent, plus its client.

Bound to 127.0.0.1:<port> or `unix:/path.sock` only; it is for processes on the device itself.
Agent errors become gRPC status codes here and nowhere else; the client maps them back. Requests
are bounded (`infer_max_batch`, `infer_max_bytes`): beyond them Infer is INVALID_ARGUMENT before any
work, so one caller cannot make the agent run (and then hold the memory of) a huge batch. Bytes that
do not parse are INVALID_ARGUMENT too (rpc_guard).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from concurrent import futures
from typing import Protocol, cast

import grpc
import numpy as np

from edgecut import rpc_guard
from edgecut.errors import EdgecutError
from edgecut.v1 import agent_pb2, agent_pb2_grpc

from .errors import AgentError, AgentUnavailable, BadInput, ConfigError, ModelRejected, NoModelError

_STATUS: list[tuple[type[Exception], grpc.StatusCode]] = [
    (BadInput, grpc.StatusCode.INVALID_ARGUMENT),
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (NoModelError, grpc.StatusCode.FAILED_PRECONDITION),
    (ModelRejected, grpc.StatusCode.FAILED_PRECONDITION),
    (EdgecutError, grpc.StatusCode.INTERNAL),
]
_MAX_MESSAGE = 64 << 20  # a batch of images and its dense outputs
MAX_REPLY = _MAX_MESSAGE  # Infer refuses a batch whose outputs would not fit (runtime.max_output_bytes)
MAX_RANK = 8


class AgentControl(Protocol):
    """What the API needs from the agent (edgecut.agent.agent.Agent implements it)."""

    def infer(self, image: np.ndarray) -> tuple[str, dict[str, np.ndarray], float]: ...
    def status(self) -> agent_pb2.AgentStatus: ...
    def set_tasks(self, tasks: Iterable[str]) -> agent_pb2.AgentStatus: ...
    def rollback(self) -> agent_pb2.AgentStatus: ...
    def unpin(self) -> agent_pb2.AgentStatus: ...


def to_tensor(arr: np.ndarray) -> agent_pb2.Tensor:
    arr = np.ascontiguousarray(arr, dtype="<f4")
    return agent_pb2.Tensor(shape=list(arr.shape), data=arr.tobytes())


def from_tensor(t: agent_pb2.Tensor) -> np.ndarray:
    shape = tuple(int(d) for d in t.shape)
    if len(shape) > MAX_RANK or any(d < 0 for d in shape):
        raise BadInput(
            f"tensor shape {list(shape)[: MAX_RANK + 1]} is invalid: rank <= {MAX_RANK}, no negative axis"
        )
    need = math.prod(shape) * 4  # Python ints: a shape like [2**32, 2**32] cannot overflow here
    if need != len(t.data):
        raise BadInput(f"tensor of shape {list(shape)} needs {need} bytes, got {len(t.data)}")
    return np.frombuffer(t.data, dtype="<f4").reshape(shape)


def _abort(context: grpc.ServicerContext, exc: EdgecutError) -> None:
    code = next(c for cls, c in _STATUS if isinstance(exc, cls))
    context.abort(code, str(exc))


class AgentServicer:
    def __init__(self, agent: AgentControl, max_batch: int = 16, max_bytes: int = 16 << 20) -> None:
        self.agent, self.max_batch, self.max_bytes = agent, max_batch, max_bytes

    def _check(self, t: agent_pb2.Tensor) -> None:
        if len(t.data) > self.max_bytes:
            raise BadInput(
                f"image is {len(t.data)} bytes, above infer_max_bytes={self.max_bytes}: send smaller batches"
            )
        if t.shape and t.shape[0] > self.max_batch:
            raise BadInput(f"batch of {t.shape[0]} images is above infer_max_batch={self.max_batch}")

    def Infer(
        self, request: agent_pb2.InferRequest, context: grpc.ServicerContext
    ) -> agent_pb2.InferResponse:
        try:
            self._check(request.image)
            artifact_id, outs, ms = self.agent.infer(from_tensor(request.image))
        except EdgecutError as exc:
            _abort(context, exc)
            raise  # unreachable: abort raises
        return agent_pb2.InferResponse(
            outputs={k: to_tensor(v) for k, v in outs.items()}, artifact_id=artifact_id, latency_ms=ms
        )

    def Status(
        self, request: agent_pb2.StatusRequest, context: grpc.ServicerContext
    ) -> agent_pb2.AgentStatus:
        return self.agent.status()

    def SetTasks(
        self, request: agent_pb2.SetTasksRequest, context: grpc.ServicerContext
    ) -> agent_pb2.AgentStatus:
        try:
            return self.agent.set_tasks(list(request.tasks))
        except EdgecutError as exc:
            _abort(context, exc)
            raise

    def Rollback(
        self, request: agent_pb2.RollbackRequest, context: grpc.ServicerContext
    ) -> agent_pb2.AgentStatus:
        try:
            return self.agent.rollback()
        except EdgecutError as exc:
            _abort(context, exc)
            raise

    def Unpin(self, request: agent_pb2.UnpinRequest, context: grpc.ServicerContext) -> agent_pb2.AgentStatus:
        return self.agent.unpin()


def create_server(
    address: str, agent: AgentControl, max_workers: int = 8, max_batch: int = 16, max_bytes: int = 16 << 20
) -> tuple[grpc.Server, str]:
    """Bind (not start) the API; returns the server and the address clients should dial."""
    if not (address.startswith("unix:") or address.startswith(("127.0.0.1:", "localhost:", "[::1]:"))):
        raise ConfigError(f"local API address {address!r} must be on loopback (127.0.0.1:PORT) or unix:/path")
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="agent-api"),
        options=[
            ("grpc.max_receive_message_length", max(_MAX_MESSAGE, max_bytes + (1 << 20))),
            ("grpc.max_send_message_length", MAX_REPLY),
        ],
    )
    servicer = AgentServicer(agent, max_batch, max_bytes)
    server.add_generic_rpc_handlers(
        (rpc_guard.generic_handler(agent_pb2.DESCRIPTOR.services_by_name["AgentService"], servicer),)
    )
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen on {address}: {exc}") from exc
    if address.startswith("unix:"):
        return server, address
    host = address.rsplit(":", 1)[0]
    return server, f"{host}:{port}"


class AgentClient:
    """Calls a running agent's local API; gRPC failures become AgentError subclasses."""

    def __init__(self, address: str, timeout_s: float = 10.0) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(
            address, options=[("grpc.max_receive_message_length", _MAX_MESSAGE)]
        )
        self._stub = agent_pb2_grpc.AgentServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: object, timeout_s: float | None = None) -> object:
        try:
            return getattr(self._stub, method)(request, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise AgentUnavailable(
                    f"no agent answering on {self.address} ({code.name}): is it running?"
                ) from exc
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise BadInput(details) from exc
            if code == grpc.StatusCode.FAILED_PRECONDITION:
                raise NoModelError(details) from exc
            raise AgentError(f"{method} failed: {code.name}: {details}") from exc

    def infer(self, image: np.ndarray) -> agent_pb2.InferResponse:
        return cast(
            agent_pb2.InferResponse, self._call("Infer", agent_pb2.InferRequest(image=to_tensor(image)))
        )

    def status(self) -> agent_pb2.AgentStatus:
        return cast(agent_pb2.AgentStatus, self._call("Status", agent_pb2.StatusRequest()))

    def set_tasks(self, tasks: list[str]) -> agent_pb2.AgentStatus:
        return cast(agent_pb2.AgentStatus, self._call("SetTasks", agent_pb2.SetTasksRequest(tasks=tasks)))

    def rollback(self) -> agent_pb2.AgentStatus:
        return cast(
            agent_pb2.AgentStatus,
            self._call("Rollback", agent_pb2.RollbackRequest(), timeout_s=max(self.timeout_s, 60.0)),
        )

    def unpin(self) -> agent_pb2.AgentStatus:
        return cast(agent_pb2.AgentStatus, self._call("Unpin", agent_pb2.UnpinRequest()))
