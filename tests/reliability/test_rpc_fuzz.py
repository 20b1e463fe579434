"""Hypothesis-generated requests for every public Gateway RPC, built from the request's descriptor (every
field, nested messages, repeated fields, maps, oneofs, enum numbers nobody defined, NaN and huge numbers,
odd strings): whatever the message, the answer is a status a caller can act on, never UNKNOWN or INTERNAL,
and never a hang. The examples are bounded and derandomized so the file stays fast and CI sees one set."""

from __future__ import annotations

import grpc
import peftlab.v1.gateway_pb2  # noqa: F401 - registers the Gateway's descriptors
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SERVICE = descriptor_pool.Default().FindServiceByName("peftlab.v1.Gateway")
# Strings that have broken things before: traversal, NUL, newlines, control characters, long names, ids of
# the right shape that name nothing, digits of other scripts, stream-id and page-token look-alikes.
ODD_STRINGS = [
    "",
    "../../etc/passwd",
    "/etc",
    "a\x00b",
    "r-1\n",
    "\x07",
    "x" * 300,
    "r-20260101-000000-abcdef",
    "١٢٣",
    "²",
    "1-0",
    "99999999999999999999999",
    "-1",
    "hf:a/b",
    "~",
    "lora",
    "NaN",
]
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
MAX_DEPTH = 3


def _scalar(field) -> st.SearchStrategy:
    kind = field.type
    if kind in (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32):
        return st.one_of(st.integers(*INT32), st.sampled_from([0, -1, 1, 2, 1000, 1001, 4097, *INT32]))
    if kind in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
        return st.one_of(st.integers(*INT64), st.sampled_from([0, -1, 1, 2**31, *INT64]))
    if kind in (F.TYPE_UINT32, F.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if kind in (F.TYPE_UINT64, F.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    if kind == F.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if kind == F.TYPE_FLOAT:
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if kind == F.TYPE_BOOL:
        return st.booleans()
    if kind == F.TYPE_STRING:
        return st.one_of(st.text(max_size=24), st.sampled_from(ODD_STRINGS))
    if kind == F.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.sampled_from([b"{}\n", b"\xff\xfe", b"[" * 100_000]))
    if kind == F.TYPE_ENUM:
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), st.integers(-3, 99))
    raise AssertionError(f"no strategy for {field.full_name}")


def _value(field, depth: int) -> st.SearchStrategy:
    if field.type == F.TYPE_MESSAGE:
        return messages(field.message_type, depth + 1)
    return _scalar(field)


@st.composite
def _message(draw, descriptor, depth: int):
    message = message_factory.GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if depth >= MAX_DEPTH or not draw(st.booleans()):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            entries = draw(st.dictionaries(_scalar(key), _value(value, depth), max_size=3))
            target = getattr(message, field.name)
            for k, v in entries.items():
                if value.type == F.TYPE_MESSAGE:
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
        elif field.is_repeated:
            items = draw(st.lists(_value(field, depth), max_size=3))
            target = getattr(message, field.name)
            if field.type == F.TYPE_MESSAGE:
                for item in items:
                    target.add().CopyFrom(item)
            else:
                target.extend(items)
        elif field.type == F.TYPE_MESSAGE:
            getattr(message, field.name).CopyFrom(draw(_value(field, depth)))
        else:
            setattr(message, field.name, draw(_scalar(field)))
    return message


def messages(descriptor, depth: int = 0) -> st.SearchStrategy:
    return _message(descriptor, depth)


@pytest.mark.parametrize("rpc", [m.name for m in SERVICE.methods])
def test_generated_requests_never_get_unknown_or_internal(rpc, input_stack):
    method = SERVICE.methods_by_name[rpc]
    response_type = message_factory.GetMessageClass(method.output_type)
    channel = input_stack.gateway.channel
    kind = channel.unary_stream if method.server_streaming else channel.unary_unary
    call = kind(
        f"/{SERVICE.full_name}/{rpc}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_type.FromString,
    )
    seen = []

    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(messages(method.input_type))
    def answered(request):
        try:
            reply = call(request, timeout=15, metadata=input_stack.auth)
            if method.server_streaming:
                for _ in reply:  # a stream that starts (a real run's events) is read to its first reply
                    reply.cancel()
                    break
            seen.append("OK")
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.CANCELLED and method.server_streaming:
                seen.append("OK")
                return
            assert code not in (
                grpc.StatusCode.UNKNOWN,
                grpc.StatusCode.INTERNAL,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            ), f"{rpc}({request}) -> {code.name}: {exc.details()}"
            seen.append(code.name)

    answered()
    assert seen
