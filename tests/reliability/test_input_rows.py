"""The bad inputs of issue 12's table, each answered with its status (never INTERNAL or UNKNOWN) and a
message a person can act on: optimizer seed and bounds, a huge categorical, an unknown trial status, bytes
that are no message at all, ids with a trailing newline or a NUL, values too big to echo."""

from __future__ import annotations

import logging
import time

import grpc
import pytest
from peftlab.v1 import gateway_pb2_grpc, optimizer_pb2_grpc, trainer_pb2
from peftlab.v1 import optimizer_pb2 as pb
from service_helpers import start_gateway, start_optimizer

from services.common.interceptors import FIELD_KEY

LINE = pb.SearchSpace(parameters=[pb.Parameter(name="x", float_range=pb.FloatRange(low=0, high=1))])
DONE = {"x": pb.ParameterValue(float_value=0.5)}


@pytest.fixture(scope="module")
def optimizer():
    running = start_optimizer()
    yield running
    running.stop(0)


def _refused(rpc, request, code=grpc.StatusCode.INVALID_ARGUMENT) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        rpc(request, timeout=20)
    assert caught.value.code() == code, caught.value.details()
    return caught.value


def _field(error: grpc.RpcError) -> str:
    return dict(error.trailing_metadata() or ()).get(FIELD_KEY, "")


def test_a_negative_seed_is_invalid_argument(optimizer):
    suggest = optimizer_pb2_grpc.OptimizerStub(optimizer.channel).Suggest
    assert _field(_refused(suggest, pb.SuggestRequest(space=LINE, seed=-1))) == "seed"


@pytest.mark.parametrize("low,high", [(-1e308, 1e308), (0.0, 1e308), (-1e308, 0.0)])
def test_bounds_too_wide_for_the_scaling_are_invalid_argument(optimizer, low, high):
    suggest = optimizer_pb2_grpc.OptimizerStub(optimizer.channel).Suggest
    space = pb.SearchSpace(parameters=[pb.Parameter(name="x", float_range=pb.FloatRange(low=low, high=high))])
    error = _refused(suggest, pb.SuggestRequest(space=space))
    assert _field(error) == "space.parameters[x].low" and "within" in error.details()


def test_a_5000_choice_categorical_is_refused_at_once(optimizer):
    suggest = optimizer_pb2_grpc.OptimizerStub(optimizer.channel).Suggest
    choices = pb.Choices(values=[pb.ParameterValue(int_value=i) for i in range(5000)])
    space = pb.SearchSpace(parameters=[pb.Parameter(name="c", categorical=choices)])
    start = time.monotonic()
    error = _refused(suggest, pb.SuggestRequest(space=space))
    assert time.monotonic() - start < 5 and "at most 256 choices" in error.details()


def test_an_unknown_trial_status_is_not_read_as_complete(optimizer):
    suggest = optimizer_pb2_grpc.OptimizerStub(optimizer.channel).Suggest
    trial = pb.Trial(trial_id="t1", params=DONE, values={"valid_loss": 1.0}, status=99)
    error = _refused(suggest, pb.SuggestRequest(space=LINE, trials=[trial]))
    assert _field(error) == "trials[t1].status" and "99" in error.details()


def test_garbage_bytes_are_invalid_argument_not_internal(optimizer):
    call = optimizer.channel.unary_unary("/peftlab.v1.Optimizer/Suggest")
    with pytest.raises(grpc.RpcError) as caught:
        call(b"\xff\xff\xff\xff\x0f", timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid message" in caught.value.details()


def test_a_huge_value_is_clipped_in_the_message(optimizer):
    suggest = optimizer_pb2_grpc.OptimizerStub(optimizer.channel).Suggest
    name = "n" * 1_000_000
    space = pb.SearchSpace(parameters=[pb.Parameter(name=name, float_range=pb.FloatRange(low=1, high=0))])
    error = _refused(suggest, pb.SuggestRequest(space=space))
    assert len(error.details()) < 2000 and "more characters" in error.details()


def test_ids_with_a_newline_or_nul_are_invalid_and_never_logged_raw(
    redis_url, redis_prefix, chat_data, tmp_path, caplog
):
    gateway = start_gateway(redis_url, redis_prefix, chat_data.parent, tmp_path / "runs")
    try:
        stub = gateway_pb2_grpc.GatewayStub(gateway.channel)
        caplog.set_level(logging.DEBUG)
        for bad in ("nl-test\n", "a\x00b", "x" * 100_000):
            error = _refused(stub.GetRun, trainer_pb2.GetRunRequest(run_id=bad))
            assert _field(error) == "run_id" and len(error.details()) < 2000
        assert "\x00" not in caplog.text and "nl-test\n" not in caplog.text and "x" * 2000 not in caplog.text
    finally:
        gateway.stop(0)


def test_the_optimizer_process_runs_blas_on_one_thread():
    import subprocess
    import sys

    code = (
        "import numpy\n"
        "from threadpoolctl import threadpool_info\n"
        "from services.optimizer.server import limit_blas_threads\n"
        "limit_blas_threads(1)\n"
        "print(sorted({p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[1]", out.stderr


def test_symlinks_are_resolved_before_the_root_check(tmp_path):
    from services.common.errors import InvalidArgument
    from services.common.validation import confine

    root, outside = tmp_path / "data", tmp_path / "secret"
    (root / "real").mkdir(parents=True)
    outside.mkdir()
    (root / "evil-link").symlink_to(outside)
    (root / "good-link").symlink_to(root / "real")
    assert confine("good-link", root, "path") == root / "good-link"
    with pytest.raises(InvalidArgument, match="outside the allowed root"):
        confine("evil-link", root, "path")
    with pytest.raises(InvalidArgument, match="outside the allowed root"):
        confine("evil-link/file.jsonl", root, "path")


def test_paths_too_long_are_invalid_argument_through_the_gateway(
    redis_url, redis_prefix, chat_data, tmp_path
):
    from peftlab.v1 import gateway_pb2

    from services.common.codec import spec_to_proto

    gateway = start_gateway(redis_url, redis_prefix, chat_data.parent, tmp_path / "runs")
    try:
        stub = gateway_pb2_grpc.GatewayStub(gateway.channel)
        for data in ("d" * 6000, "a/" * 600, "x" * 1_000_000):
            spec = spec_to_proto({"model": "tiny-llama", "data": data, "iters": 2})
            error = _refused(stub.SubmitRun, gateway_pb2.SubmitRunRequest(spec=spec))
            assert _field(error) == "spec.data" and len(error.details()) < 2000, error.details()
    finally:
        gateway.stop(0)
