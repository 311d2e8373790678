"""gRPC method handlers that turn bytes which do not parse into INVALID_ARGUMENT, not INTERNAL.

grpcio's generated `add_*Servicer_to_server` deserializes with `FromString`; when that raises, the
client gets INTERNAL "Exception deserializing request!", which reads like a server bug. Here the
request deserializer never raises: it hands the servicer a `Malformed` marker, and the guard around
every method ends that call with INVALID_ARGUMENT naming the message type (docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

# the trailing-metadata key the fleet server uses for its Error.Code names (error_map.CODE_METADATA_KEY)
CODE_METADATA_KEY = "edgecut-error-code"


class Malformed:
    """Stands in for a request whose bytes are not a valid message of the method's input type."""

    def __init__(self, type_name: str, size: int, reason: str) -> None:
        self.message = (
            f"the {size}-byte request is not a valid {type_name} ({reason or 'does not parse'}); "
            "send a serialized protobuf message of that type (see docs/protocol.md)"
        )


def _deserializer(cls: type[Message]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except (DecodeError, RuntimeError, ValueError) as exc:  # upb raises DecodeError; others vary
            return Malformed(cls.DESCRIPTOR.full_name, len(data), str(exc))

    return parse


def _refuse(context: grpc.ServicerContext, bad: Malformed) -> None:
    context.set_trailing_metadata(((CODE_METADATA_KEY, "MALFORMED"),))
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, bad.message)


def _unary(behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, Malformed):
            _refuse(context, request)
        return behavior(request, context)

    return call


def _stream(behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        if isinstance(request, Malformed):
            _refuse(context, request)
        yield from behavior(request, context)

    return call


def generic_handler(service: ServiceDescriptor, servicer: object) -> grpc.GenericRpcHandler:
    """Handlers for every method of `service` (unary or server-streaming) bound to `servicer`."""
    handlers = {}
    for method in service.methods:
        if method.client_streaming:
            raise NotImplementedError(f"{method.full_name}: client streaming is not used by edgecut")
        request_cls = GetMessageClass(method.input_type)
        response_cls = GetMessageClass(method.output_type)
        behavior = getattr(servicer, method.name)
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _stream(behavior),
                request_deserializer=_deserializer(request_cls),
                response_serializer=response_cls.SerializeToString,
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(behavior),
                request_deserializer=_deserializer(request_cls),
                response_serializer=response_cls.SerializeToString,
            )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
