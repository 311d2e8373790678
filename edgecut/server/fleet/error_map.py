"""The one place where server exceptions become wire errors: `edgecut.v1.Error` and gRPC status codes.

A `ServerError` already carries a sentence for a human (raised by the engine or the policy); any
other exception is a bug on our side, so the device gets a generic INTERNAL sentence and the detail
stays in the server log.
"""

from __future__ import annotations

import grpc

from edgecut.server.errors import ServerError
from edgecut.v1 import fleet_pb2 as pb

# Error.Code name -> gRPC status for an RPC that fails before a job exists.
GRPC_STATUS: dict[str, grpc.StatusCode] = {
    "MALFORMED": grpc.StatusCode.INVALID_ARGUMENT,
    "UNKNOWN_TASK": grpc.StatusCode.INVALID_ARGUMENT,
    "EMPTY_TASKS": grpc.StatusCode.INVALID_ARGUMENT,
    "IMPOSSIBLE_BUDGET": grpc.StatusCode.FAILED_PRECONDITION,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "BUILD_FAILED": grpc.StatusCode.ABORTED,
    "INTERNAL": grpc.StatusCode.INTERNAL,
    "INVALID_FIELD": grpc.StatusCode.INVALID_ARGUMENT,
    "RATE_LIMITED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "QUEUE_FULL": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "TOO_LARGE": grpc.StatusCode.INVALID_ARGUMENT,
}

# Trailing-metadata key that carries the Error.Code name next to a non-OK gRPC status.
CODE_METADATA_KEY = "edgecut-error-code"


def error_code(exc: BaseException) -> str:
    code = getattr(exc, "code", "INTERNAL") if isinstance(exc, ServerError) else "INTERNAL"
    return code if code in GRPC_STATUS else "INTERNAL"


def error_sentence(exc: BaseException) -> str:
    if isinstance(exc, ServerError) and (exc.public or str(exc)):
        return exc.public or str(exc)
    return f"internal server error ({type(exc).__name__}); the server log has the details, try again later"


def to_error(exc: BaseException, device_id: str = "", needs_seq: int = 0) -> pb.Error:
    return pb.Error(
        code=error_code(exc),  # the enum accepts its value name
        message=error_sentence(exc),
        device_id=device_id,
        needs_seq=needs_seq,
    )


def malformed(what: str, size: int, reason: str, device_id: str) -> pb.Error:
    return pb.Error(
        code=pb.Error.MALFORMED,
        message=f"could not parse the {size}-byte payload as edgecut.v1.{what} ({reason}); "
        f"publish a serialized {what} protobuf message (see docs/protocol.md)",
        device_id=device_id,
    )


def grpc_status(code: str) -> grpc.StatusCode:
    return GRPC_STATUS.get(code, grpc.StatusCode.INTERNAL)
