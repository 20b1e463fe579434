"""The shared service pieces: the error-mapping interceptor (one place for status codes; no leaked
exception text), structured logs, env config, path confinement, and the protos mirroring the engine's
dataclasses field by field."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import grpc
import pytest
from peftlab.v1 import common_pb2

from services.common import codec
from services.common.config import RedisConfig, load_config
from services.common.errors import InvalidArgument, NotFound
from services.common.grpc_server import ServiceBinding, build_server
from services.common.logs import KeyValueFormatter, _ContextFilter, run_context
from services.common.validation import Roots, confine

METHOD = "/test.Echo/Call"


def _serve(behavior):
    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Call": grpc.unary_unary_rpc_method_handler(behavior)}
    )
    binding = ServiceBinding(
        "test.Echo", lambda servicer, server: server.add_generic_rpc_handlers((servicer,)), handler
    )
    server = build_server("127.0.0.1:0", [binding])
    server.start()
    return server


def _call(server, metadata=()) -> grpc.RpcError:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary(METHOD)(b"", timeout=5, metadata=metadata)
        return caught.value


@pytest.mark.parametrize(
    ("raised", "code", "details"),
    [
        (
            InvalidArgument("must be > 0", "spec.rank"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "spec.rank: must be > 0",
        ),
        (NotFound("no run 'x'", "run_id"), grpc.StatusCode.NOT_FOUND, "run_id: no run 'x'"),
    ],
)
def test_domain_errors_map_to_one_code_with_the_field(raised, code, details):
    def behavior(request, context):
        raise raised

    server = _serve(behavior)
    try:
        error = _call(server)
        assert (error.code(), error.details()) == (code, details)
        trailing = dict(error.trailing_metadata())
        assert trailing["peftlab-field"] == raised.field and trailing["x-request-id"]
    finally:
        server.stop(0)


def test_unexpected_errors_are_internal_without_their_text(caplog):
    def behavior(request, context):
        raise RuntimeError("secret path /home/x/.ssh")

    server = _serve(behavior)
    try:
        with caplog.at_level(logging.ERROR):
            error = _call(server, metadata=(("x-request-id", "req-42"),))
        assert error.code() == grpc.StatusCode.INTERNAL
        assert "secret" not in error.details() and "req-42" in error.details()
        assert any("secret path" in (r.exc_text or "") for r in caplog.records)  # the traceback is logged
    finally:
        server.stop(0)


def test_log_lines_are_key_value_with_the_run_id():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "run ended", None, None)
    record.step = 3
    with run_context("r-1"):
        _ContextFilter("trainer").filter(record)
    line = KeyValueFormatter().format(record)
    assert (
        'msg="run ended"' in line and "run_id=r-1" in line and "service=trainer" in line and "step=3" in line
    )


def test_config_reads_prefixed_env_and_names_bad_values():
    config = load_config(RedisConfig, env={"PEFTLAB_REDIS_PREFIX": "x:", "PEFTLAB_EVENTS_MAXLEN": "5"})
    assert (config.redis_prefix, config.events_maxlen) == ("x:", 5)
    with pytest.raises(ValueError, match="PEFTLAB_EVENTS_MAXLEN"):
        load_config(RedisConfig, env={"PEFTLAB_EVENTS_MAXLEN": "many"})


def test_paths_are_confined_to_their_root(tmp_path):
    roots = Roots.from_paths(tmp_path / "models", tmp_path / "data", tmp_path / "runs")
    assert confine("tiny", roots.models, "m") == roots.models / "tiny"
    assert confine(str(roots.models / "a" / "b"), roots.models, "m") == roots.models / "a" / "b"
    for bad in ("../../etc/passwd", "/etc/passwd", "a/../../x", "..", str(tmp_path / "modelsX")):
        with pytest.raises(InvalidArgument) as caught:
            confine(bad, roots.models, "spec.model")
        assert caught.value.field == "spec.model"


def _proto_fields(message) -> set[str]:
    return set(message.DESCRIPTOR.fields_by_name)


def _dataclass_fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} - {"kind"}


def test_protos_mirror_the_engine_dataclasses():
    from services.common.spec import RunSpec
    from services.trainer.engine.hardware import Hardware
    from services.trainer.engine.metrics import EvalMetrics, RunResult, StepMetrics, TaskScore

    assert _proto_fields(common_pb2.RunSpec) == _dataclass_fields(RunSpec)
    assert _proto_fields(common_pb2.RunMetrics) == _dataclass_fields(RunResult)
    assert _proto_fields(common_pb2.StepMetrics) == _dataclass_fields(StepMetrics)
    assert _proto_fields(common_pb2.EvalMetrics) == _dataclass_fields(EvalMetrics)
    assert _proto_fields(common_pb2.TaskScore) == _dataclass_fields(TaskScore)
    assert _proto_fields(common_pb2.Hardware) == _dataclass_fields(Hardware)


def test_spec_round_trip_keeps_unset_fields_unset():
    values = {"model": "tiny-llama", "rank": 4, "packing": False, "target_modules": ["self_attn.q_proj"]}
    message = codec.spec_to_proto(values)
    assert codec.spec_fields(message) == values
    assert not message.HasField("alpha")
    # The engine accepts what the proto carries (defaults fill the rest).
    from services.common.spec import RunSpec

    assert RunSpec.from_dict(codec.spec_fields(message)).rank == 4


def test_a_spec_crosses_as_its_given_fields():
    import pickle

    from services.common.errors import InvalidArgument

    spec = codec.spec_from_proto(codec.spec_to_proto({"method": "lora", "iters": 100}))
    assert (spec.learning_rate, spec.warmup_steps) == (2e-3, 10)  # defaults filled, typed
    assert codec.spec_fields(codec.spec_to_proto(spec)) == {"method": "lora", "iters": 100}
    assert pickle.loads(pickle.dumps(spec)).given() == {"method": "lora", "iters": 100}  # to a run's process
    # An override of the method takes that method's default rate, not the base's.
    assert spec.overlay({"method": "full"}).learning_rate == 1e-4
    assert spec.replace(method="full").learning_rate == 2e-3  # replace keeps every field as it is
    resolved = spec.at("/models/m", "/data/d")  # paths as one machine resolves them; the rest as given
    assert resolved.given() == {"method": "lora", "iters": 100, "model": "/models/m", "data": "/data/d"}
    with pytest.raises(InvalidArgument) as error:
        codec.spec_from_proto(codec.spec_to_proto({"rank": 0}), "base")
    assert error.value.field == "base.rank"


def test_every_proto_field_is_documented():
    import re

    field = re.compile(r"^\s*(optional\s+|repeated\s+)?(map<[^>]+>|[\w.]+)\s+\w+\s*=\s*\d+;")
    root = Path(__file__).resolve().parents[1] / "protos" / "peftlab" / "v1"
    for name in ("common.proto", "trainer.proto", "gateway.proto", "comparator.proto"):
        lines = (root / name).read_text().splitlines()
        for i, line in enumerate(lines):
            if field.match(line) and not line.strip().startswith("//"):
                assert lines[i - 1].strip().startswith("//"), f"{name}:{i + 1} has no comment: {line.strip()}"
