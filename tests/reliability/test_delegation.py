"""The comparator acts for the caller, never with more rights: it takes experiments only from the gateway
(service token + the user it is for), holds no token of its own, and submits each run with the gateway's
grant for that user, which opens nothing but an experiment's SubmitRun/CancelRun. Per-user upload limits."""

from __future__ import annotations

import json

import grpc
import pytest
from peftlab.v1 import (
    common_pb2,
    comparator_pb2,
    comparator_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    trainer_pb2,
)
from service_helpers import free_port, start_comparator, start_gateway, wait_for

from services.common import transport
from services.common.codec import spec_to_proto
from services.common.identity import CALLER_KEY, GRANT_KEY, mint_grant
from services.common.interceptors import SERVICE_TOKEN_KEY, outgoing_metadata

SERVICE = "svc-delegation-test-token"
ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789"
SPEC = {"model": "tiny-llama", "data": "chat", "iters": 2, "batch_size": 2, "max_seq_length": 64}


def _as(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _code(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.fixture
def system(monkeypatch, tmp_path, redis_url, redis_prefix, chat_data):
    monkeypatch.setenv("PEFTLAB_SERVICE_TOKEN", SERVICE)
    transport.reload()
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# users of this gateway\nalice {ALICE}\nbob {BOB}\n")
    comparator_port = free_port()
    gateway = start_gateway(
        redis_url,
        redis_prefix,
        chat_data.parent,
        tmp_path / "runs",
        api_tokens_file=tokens,
        comparator_address=f"127.0.0.1:{comparator_port}",
    )
    comparator = start_comparator(
        redis_url,
        redis_prefix,
        comparator_port,
        gateway.address,
        "127.0.0.1:1",
        tmp_path / "experiments",
        chat_data.parent,
    )
    yield gateway, comparator
    comparator.stop(0)
    gateway.stop(0)
    monkeypatch.undo()
    transport.reload()


def _alices_experiment(stub, chat_data) -> tuple[str, str]:
    """A comparison started by alice, once the comparator has submitted its first run: (experiment, run)."""
    base = spec_to_proto({**SPEC, "data": chat_data.name})
    request = comparator_pb2.StartComparisonRequest(
        name="for alice", base=base, arms=[comparator_pb2.ComparisonArm(name="lora")]
    )
    experiment = stub.StartComparison(request, timeout=30, metadata=_as(ALICE)).experiment
    get = comparator_pb2.GetExperimentRequest(experiment_id=experiment.id)
    run_ids = wait_for(
        lambda: stub.GetExperiment(get, timeout=10, metadata=_as(ALICE)).experiment.run_ids,
        timeout=60,
        interval=0.2,
        what="the comparator's first run for alice",
    )
    return experiment.id, run_ids[0]


def test_the_comparator_submits_for_the_caller_with_a_grant_not_a_token(system, store, chat_data):
    gateway, comparator = system
    stub = gateway_pb2_grpc.GatewayStub(gateway.channel)
    experiment_id, run_id = _alices_experiment(stub, chat_data)
    assert store.get_run(run_id).owner == "alice"  # the user it is for, not the comparator
    # Recorded for alice with the gateway's grant; alice's token itself is nowhere in Redis.
    record = comparator.core.store.get(experiment_id)
    assert (record.caller, record.grant) == ("alice", mint_grant("alice", ALICE))
    dump = json.dumps(
        {k: store.r.hgetall(k) for k in store.r.keys(f"{store.prefix}*") if store.r.type(k) == "hash"}
    )
    assert ALICE not in dump and BOB not in dump


def test_an_experiments_runs_are_its_users_and_only_they_cancel_them(system, store, chat_data):
    gateway, _ = system
    stub = gateway_pb2_grpc.GatewayStub(gateway.channel)
    experiment_id, run_id = _alices_experiment(stub, chat_data)
    cancel_run = trainer_pb2.CancelRunRequest(run_id=run_id)
    cancel_experiment = comparator_pb2.CancelExperimentRequest(experiment_id=experiment_id)
    # Bob sees alice's run but cancels it neither directly nor through her experiment.
    assert stub.GetRun(trainer_pb2.GetRunRequest(run_id=run_id), timeout=10, metadata=_as(BOB)).run.owner == (
        "alice"
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.CancelRun(cancel_run, timeout=10, metadata=_as(BOB))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"run {run_id} belongs to user 'alice'" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        stub.CancelExperiment(cancel_experiment, timeout=30, metadata=_as(BOB))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"experiment {experiment_id} belongs to user 'alice'" in caught.value.details()
    assert store.get_run(run_id).status == "QUEUED"  # no trainer: it waits
    # Alice cancels her experiment; the comparator cancels its runs for her, with her grant.
    stub.CancelExperiment(cancel_experiment, timeout=30, metadata=_as(ALICE))
    assert store.get_run(run_id).status == "CANCELLED"


def test_the_comparator_refuses_calls_that_name_no_user(system):
    _, comparator = system
    stub = comparator_pb2_grpc.ComparatorStub(comparator.channel)
    listing = comparator_pb2.ListExperimentsRequest()
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListExperiments(listing, timeout=10, metadata=outgoing_metadata())  # service token, no user
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED and CALLER_KEY in caught.value.details()
    no_token = ((CALLER_KEY, "alice"),)
    assert _code(lambda: stub.ListExperiments(listing, timeout=10, metadata=no_token)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    as_gateway = outgoing_metadata(((CALLER_KEY, "alice"),))
    assert _code(lambda: stub.ListExperiments(listing, timeout=10, metadata=as_gateway)) == grpc.StatusCode.OK


def test_a_grant_opens_only_the_runs_calls_of_its_user_with_the_service_token(system, chat_data):
    gateway, _ = system
    stub = gateway_pb2_grpc.GatewayStub(gateway.channel)
    submit = gateway_pb2.SubmitRunRequest(
        spec=spec_to_proto({**SPEC, "data": chat_data.name}), experiment_id="x-1"
    )
    grant = mint_grant("alice", ALICE)

    def delegated(service: str, caller: str, grant: str) -> tuple[tuple[str, str], ...]:
        return ((SERVICE_TOKEN_KEY, service), (CALLER_KEY, caller), (GRANT_KEY, grant))

    run = stub.SubmitRun(submit, timeout=30, metadata=delegated(SERVICE, "alice", grant)).run
    assert run.owner == "alice"
    # Acting for bob, the comparator may not cancel alice's run; acting for alice, it may.
    cancel = trainer_pb2.CancelRunRequest(run_id=run.id)
    as_bob = delegated(SERVICE, "bob", mint_grant("bob", BOB))
    assert (
        _code(lambda: stub.CancelRun(cancel, timeout=30, metadata=as_bob))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert stub.CancelRun(cancel, timeout=30, metadata=delegated(SERVICE, "alice", grant)).run.status == (
        common_pb2.RUN_STATUS_CANCELLED
    )
    refused = {
        "no service token": delegated("", "alice", grant),
        "wrong service token": delegated(SERVICE + "x", "alice", grant),
        "alice's grant for bob": delegated(SERVICE, "bob", grant),
        "a grant of alice's old token": delegated(SERVICE, "alice", mint_grant("alice", "alice-old-token")),
        "no grant": delegated(SERVICE, "alice", ""),
    }
    for why, metadata in refused.items():
        assert _code(lambda m=metadata: stub.SubmitRun(submit, timeout=30, metadata=m)) == (
            grpc.StatusCode.UNAUTHENTICATED
        ), why
    # Not a bearer token, and no door to anything but SubmitRun/CancelRun.
    assert _code(lambda: stub.SubmitRun(submit, timeout=30, metadata=_as(grant))) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    listing = trainer_pb2.ListRunsRequest()
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListRuns(listing, timeout=30, metadata=delegated(SERVICE, "alice", grant))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "cannot be called on a user's behalf" in caught.value.details()


def _upload(stub, token: str, name: str, rows: int = 1) -> gateway_pb2.CreateDatasetResponse:
    line = json.dumps({"text": "a line of training text"}) + "\n"
    request = gateway_pb2.CreateDatasetRequest(name=name, train=(line * rows).encode(), valid=line.encode())
    return stub.CreateDataset(request, timeout=30, metadata=_as(token))


def test_upload_limits_are_per_user_count_and_bytes(monkeypatch, tmp_path, redis_url, redis_prefix):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice {ALICE}\nbob {BOB}\n")
    data = tmp_path / "data"
    gateway = start_gateway(
        redis_url,
        redis_prefix,
        data,
        tmp_path / "runs",
        api_tokens_file=tokens,
        max_datasets_per_user=1,
        max_upload_bytes_per_user=2000,
    )
    try:
        stub = gateway_pb2_grpc.GatewayStub(gateway.channel)
        assert _upload(stub, ALICE, "alice-1").created
        with pytest.raises(grpc.RpcError) as caught:
            _upload(stub, ALICE, "alice-2")
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "PEFTLAB_MAX_DATASETS_PER_USER=1" in caught.value.details()
        with pytest.raises(grpc.RpcError) as caught:  # bob's own count is 0, but 100 rows pass his bytes
            _upload(stub, BOB, "bob-big", rows=100)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "PEFTLAB_MAX_UPLOAD_BYTES_PER_USER=2000" in caught.value.details()
        assert _upload(stub, BOB, "bob-1").created
        assert sorted(p.name for p in data.iterdir()) == ["alice-1", "bob-1"]  # nothing of the refused ones
    finally:
        gateway.stop(0)
