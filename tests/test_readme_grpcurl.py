"""The README's grpcurl examples work as written: each names a method the gateway serves (found through
reflection, as grpcurl finds it), its `-d` body parses into that method's request message, and the ones
that need no finished run are called on a real gateway with the same body."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import grpc
import peftlab.v1.gateway_pb2  # noqa: F401 - registers the descriptors
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2  # noqa: F401
from service_helpers import reflected_services, start_gateway

README = Path(__file__).resolve().parents[1] / "README.md"
CALLED = {"ListTrainers", "ListModels", "ListRuns", "Check"}


def grpcurl_commands() -> list[list[str]]:
    text = README.read_text()
    block = text.split("The same through [grpcurl]", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        line = line.strip()
        if "grpcurl " not in line:
            continue
        command = line[line.index("grpcurl ") :].split(" | ", 1)[0].rstrip(")")
        command = re.sub(r"\s+#.*$", "", command).replace("$RUN", "r-20261126-101500-ab12cd")
        commands.append(shlex.split(command))
    return commands


def _request_type(method: str):
    service, name = method.rsplit("/", 1)
    descriptor = descriptor_pool.Default().FindServiceByName(service).methods_by_name[name]
    return message_factory.GetMessageClass(descriptor.input_type), descriptor


def test_examples_parse_and_run(redis_url, redis_prefix, chat_data, tmp_path):
    commands = grpcurl_commands()
    assert len(commands) >= 8
    gateway = start_gateway(redis_url, redis_prefix, chat_data.parent, tmp_path / "runs")
    try:
        served = set(reflected_services(gateway.address))
        for argv in commands:
            assert argv[:2] == ["grpcurl", "-plaintext"], argv
            body = argv[argv.index("-d") + 1] if "-d" in argv else "{}"
            target = argv[-1]
            if target in ("list",):
                continue
            if argv[-2] == "describe":
                assert _lookup(target), target
                continue
            assert target.rsplit("/", 1)[0] in served, target
            request_type, descriptor = _request_type(target)
            request = json_format.Parse(body, request_type())
            if descriptor.name in CALLED or target.endswith("SubmitRun") and '"rank": 0' in body:
                call = gateway.channel.unary_unary(
                    f"/{target}",
                    request_serializer=request_type.SerializeToString,
                    response_deserializer=message_factory.GetMessageClass(descriptor.output_type).FromString,
                )
                if '"rank": 0' in body:
                    try:
                        call(request, timeout=10)
                        raise AssertionError("rank 0 was accepted")
                    except grpc.RpcError as exc:
                        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
                        assert exc.details() == "spec.rank: must be between 1 and 1024, got 0"
                else:
                    call(request, timeout=10)
    finally:
        gateway.stop()


def _lookup(name: str) -> bool:
    try:
        descriptor_pool.Default().FindMessageTypeByName(name)
        return True
    except KeyError:
        return False
