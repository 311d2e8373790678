"""Hypothesis strategies built from protobuf descriptors: any message of any edgecut.v1 type.

Every field is either left unset or given a value from the whole range of its wire type: floats with
NaN, ±inf and extremes, 64-bit integers to their limits, unknown enum numbers, text of any script,
nested messages, repeated fields and maps. Nothing here knows what the fields mean.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

F = FieldDescriptor
_INTS = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}
# names the code gives meaning to, mixed in so examples reach past the first checks
_WORDS = ["seg", "depth", "normals", "edges", "count", "x86", "rpi4", "d1", "", " ", "../../etc", "a" * 64]


def _ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from([lo, hi, 0, 1]), st.integers(lo, hi))


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t in _INTS:
        return _ints(*_INTS[t])
    if t == F.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if t == F.TYPE_FLOAT:
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if t == F.TYPE_BOOL:
        return st.booleans()
    if t == F.TYPE_STRING:
        return st.one_of(st.sampled_from(_WORDS), st.text(max_size=80))
    if t == F.TYPE_BYTES:
        return st.binary(max_size=300)
    if t == F.TYPE_ENUM:
        return _ints(-(2**31), 2**31 - 1)  # open enums: unknown numbers must be survived too
    raise TypeError(f"no strategy for field type {t} ({field.full_name})")


def messages(desc: Descriptor, depth: int = 2) -> st.SearchStrategy[Message]:
    cls = GetMessageClass(desc)

    def value(field: FieldDescriptor) -> st.SearchStrategy[Any]:
        if field.type == F.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                key_f, val_f = (
                    field.message_type.fields_by_name["key"],
                    field.message_type.fields_by_name["value"],
                )
                val = (
                    messages(val_f.message_type, depth - 1) if val_f.type == F.TYPE_MESSAGE else scalar(val_f)
                )
                return st.dictionaries(scalar(key_f), val, max_size=4)
            inner = (
                messages(field.message_type, depth - 1)
                if depth > 0
                else st.just(GetMessageClass(field.message_type)())
            )
            return st.lists(inner, max_size=3) if field.is_repeated else inner
        one = scalar(field)
        return st.lists(one, max_size=6) if field.is_repeated else one

    parts = {f.name: st.none() | value(f) for f in desc.fields}

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = cls()
        for name, strat in parts.items():
            v = draw(strat)
            if v is None:
                continue
            field = desc.fields_by_name[name]
            target = getattr(msg, name)
            if field.type == F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
                for k, item in v.items():
                    if isinstance(item, Message):
                        target[k].CopyFrom(item)
                    else:
                        target[k] = item
            elif field.is_repeated:
                if field.type == F.TYPE_MESSAGE:
                    for item in v:
                        target.add().CopyFrom(item)
                else:
                    target.extend(v)
            elif field.type == F.TYPE_MESSAGE:
                target.CopyFrom(v)
            else:
                setattr(msg, name, v)
        return msg

    return build()


def payloads(desc: Descriptor) -> st.SearchStrategy[bytes]:
    """Serialized messages of `desc`, and arbitrary bytes that may or may not parse as one."""
    return st.one_of(messages(desc).map(lambda m: m.SerializeToString()), st.binary(max_size=400))
