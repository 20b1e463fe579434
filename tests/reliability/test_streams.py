"""Open streams never starve a service: hundreds of idle WatchRun streams on the gateway and on a trainer
(more than their thread pools) while GetRun, ListRuns and health keep answering; past the stream limit the
next watch gets RESOURCE_EXHAUSTED and unary calls still answer."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from peftlab.v1 import gateway_pb2, gateway_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from service_helpers import start_gateway, start_trainer

from services.common.codec import spec_to_proto

STREAMS = 200  # well over each server's worker threads (gateway 64, trainer 32 by default)


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def _queued_run(stub, chat_data) -> str:
    spec = spec_to_proto({"model": "tiny-llama", "data": chat_data.name, "iters": 2, "warmup_steps": 0})
    return stub.SubmitRun(gateway_pb2.SubmitRunRequest(spec=spec), timeout=10).run.id


def _open_watches(channel: grpc.Channel, stub_class, run_id: str, n: int) -> list:
    stub = stub_class(channel)
    return [stub.WatchRun(trainer_pb2.WatchRunRequest(run_id=run_id), timeout=120) for _ in range(n)]


def _assert_unary_calls_answer(channel: grpc.Channel, stub_class, run_id: str) -> None:
    stub = stub_class(channel)
    health = health_pb2_grpc.HealthStub(channel)
    for _ in range(20):
        assert stub.GetRun(trainer_pb2.GetRunRequest(run_id=run_id), timeout=5).run.id == run_id
        assert stub.ListRuns(trainer_pb2.ListRunsRequest(page_size=5), timeout=5).runs
        reply = health.Check(health_pb2.HealthCheckRequest(), timeout=2)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def gateway(redis_url, redis_prefix, chat_data, tmp_path):
    running = start_gateway(redis_url, redis_prefix, chat_data.parent, tmp_path / "runs", max_workers=8)
    yield running
    running.stop(0)


def test_many_open_watches_do_not_starve_the_gateway(gateway, chat_data):
    run_id = _queued_run(gateway_pb2_grpc.GatewayStub(gateway.channel), chat_data)
    watches = _open_watches(gateway.channel, gateway_pb2_grpc.GatewayStub, run_id, STREAMS)
    try:
        # Every watch is open on the server (and none holds one of its 8 worker threads).
        _wait_for(lambda: gateway.grpc_server.streams.open == STREAMS)
        _assert_unary_calls_answer(gateway.channel, gateway_pb2_grpc.GatewayStub, run_id)
        # The watches are live, not stuck: each got the run's QUEUED status event.
        first = next(watches[-1])
        assert first.event.WhichOneof("payload") == "status"
    finally:
        for call in watches:
            call.cancel()
    _wait_for(lambda: gateway.grpc_server.streams.open == 0)


def test_many_open_watches_do_not_starve_a_trainer(redis_url, redis_prefix, chat_data, tmp_path):
    gateway = start_gateway(redis_url, redis_prefix, chat_data.parent, tmp_path / "runs")
    run_id = _queued_run(gateway_pb2_grpc.GatewayStub(gateway.channel), chat_data)
    gateway.stop(0)  # no placer: the run stays QUEUED, the trainer only serves the watches
    trainer = start_trainer(redis_url, redis_prefix, chat_data.parent, tmp_path / "runs", max_workers=4)
    watches = []
    try:
        watches = _open_watches(trainer.channel, trainer_pb2_grpc.TrainerStub, run_id, STREAMS)
        _wait_for(lambda: trainer.grpc_server.streams.open == STREAMS)
        _assert_unary_calls_answer(trainer.channel, trainer_pb2_grpc.TrainerStub, run_id)
    finally:
        for call in watches:
            call.cancel()
        trainer.stop(0)


def test_past_the_stream_limit_a_watch_is_refused_and_unary_calls_still_answer(
    redis_url, redis_prefix, chat_data, tmp_path
):
    gateway = start_gateway(redis_url, redis_prefix, chat_data.parent, tmp_path / "runs", max_streams=5)
    watches = []
    try:
        run_id = _queued_run(gateway_pb2_grpc.GatewayStub(gateway.channel), chat_data)
        watches = _open_watches(gateway.channel, gateway_pb2_grpc.GatewayStub, run_id, 5)
        _wait_for(lambda: gateway.grpc_server.streams.open == 5)
        extra = _open_watches(gateway.channel, gateway_pb2_grpc.GatewayStub, run_id, 1)[0]
        with pytest.raises(grpc.RpcError) as refused:
            next(extra)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "PEFTLAB_MAX_STREAMS=5" in refused.value.details()
        _assert_unary_calls_answer(gateway.channel, gateway_pb2_grpc.GatewayStub, run_id)
    finally:
        for call in watches:
            call.cancel()
        gateway.stop(0)
