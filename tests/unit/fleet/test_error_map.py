from __future__ import annotations

import inspect

import grpc
import pytest

from edgecut.server import errors as server_errors
from edgecut.server.fleet import error_map
from edgecut.v1 import fleet_pb2 as pb

ERRORS = [
    c
    for _, c in inspect.getmembers(server_errors, inspect.isclass)
    if issubclass(c, server_errors.ServerError)
]


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_every_server_error_maps_to_a_wire_code_and_a_grpc_status(
    cls: type[server_errors.ServerError],
) -> None:
    err = error_map.to_error(cls("what went wrong; what to do"), "dev-1", 4)
    assert pb.Error.Code.Name(err.code) == cls.code
    assert err.message == "what went wrong; what to do" and err.device_id == "dev-1" and err.needs_seq == 4
    assert error_map.grpc_status(cls.code) != grpc.StatusCode.OK
    assert cls.code in error_map.GRPC_STATUS


def test_wire_codes_all_have_a_status() -> None:
    names = set(pb.Error.Code.keys()) - {"CODE_UNSPECIFIED"}
    assert names == set(error_map.GRPC_STATUS)


def test_a_bug_becomes_a_generic_internal_error() -> None:
    err = error_map.to_error(KeyError("secret internals"))
    assert err.code == pb.Error.INTERNAL
    assert "secret" not in err.message and "server log" in err.message


def test_malformed_sentence_names_the_message_type() -> None:
    err = error_map.malformed("TaskNeeds", 7, "truncated", "d")
    assert (
        err.code == pb.Error.MALFORMED and "edgecut.v1.TaskNeeds" in err.message and "7-byte" in err.message
    )
