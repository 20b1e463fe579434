"""Runs are owned: the gateway records who submitted a run, shows it in every Run, and lets only that user
cancel or resume it (PERMISSION_DENIED for anyone else, with Redis untouched); reading stays open to all.
Runs recorded before owners were (no `owner` field) or made without auth ("anonymous") are anyone's."""

from __future__ import annotations

import grpc
import pytest
from peftlab.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, trainer_pb2
from service_helpers import start_gateway

from services.common.codec import spec_to_proto
from services.common.identity import ANONYMOUS
from services.common.interceptors import FIELD_KEY
from services.common.records import RunRecord

ALICE, BOB = "alice-owner-token-0123", "bob-owner-token-0123"
SPEC = {"model": "tiny-llama", "iters": 2, "batch_size": 2, "max_seq_length": 64}


def _as(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
def stub(tmp_path, redis_url, redis_prefix, chat_data):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice {ALICE}\nbob {BOB}\n")
    gateway = start_gateway(
        redis_url, redis_prefix, chat_data.parent, tmp_path / "runs", api_tokens_file=tokens
    )
    yield gateway_pb2_grpc.GatewayStub(gateway.channel)
    gateway.stop(0)


def _submit(stub, chat_data, token: str) -> common_pb2.Run:
    request = gateway_pb2.SubmitRunRequest(spec=spec_to_proto({**SPEC, "data": chat_data.name}))
    return stub.SubmitRun(request, timeout=30, metadata=_as(token)).run


def _cancel(stub, run_id: str, token: str) -> common_pb2.Run:
    request = trainer_pb2.CancelRunRequest(run_id=run_id, reason="done with it")
    return stub.CancelRun(request, timeout=10, metadata=_as(token)).run


def _resume(stub, run_id: str, token: str) -> common_pb2.Run:
    return stub.ResumeRun(trainer_pb2.ResumeRunRequest(run_id=run_id), timeout=10, metadata=_as(token)).run


def _get(stub, run_id: str, token: str) -> common_pb2.Run:
    return stub.GetRun(trainer_pb2.GetRunRequest(run_id=run_id), timeout=10, metadata=_as(token)).run


def _refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def _redis(store) -> dict:
    """Every key of the test's prefix with its contents (streams by their entries)."""
    out = {}
    for key in sorted(store.r.scan_iter(match=f"{store.prefix}*")):
        kind = store.r.type(key)
        if kind == "hash":
            out[key] = store.r.hgetall(key)
        elif kind == "stream":
            out[key] = store.r.xrange(key)
        elif kind == "zset":
            out[key] = store.r.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            out[key] = store.r.smembers(key)
        else:
            out[key] = store.r.get(key) if kind == "string" else kind
    return out


def test_the_submitter_owns_the_run_and_everyone_sees_it(stub, store, chat_data):
    run = _submit(stub, chat_data, BOB)
    assert run.owner == "bob"
    assert store.r.hget(store.run_key(run.id), "owner") == "bob"
    # A shared lab: alice reads bob's run, its listing and its events.
    assert _get(stub, run.id, ALICE).owner == "bob"
    listed = stub.ListRuns(trainer_pb2.ListRunsRequest(), timeout=10, metadata=_as(ALICE)).runs
    assert [(r.id, r.owner) for r in listed] == [(run.id, "bob")]
    events = stub.WatchRun(trainer_pb2.WatchRunRequest(run_id=run.id), timeout=10, metadata=_as(ALICE))
    try:
        assert next(events).event.status.status == common_pb2.RUN_STATUS_QUEUED
    finally:
        events.cancel()  # a queued run's stream stays open


def test_only_the_owner_cancels_or_resumes_and_a_refusal_writes_nothing(stub, store, chat_data):
    run = _submit(stub, chat_data, BOB)  # no trainer: it stays QUEUED
    before = _redis(store)
    refused = _refused(lambda: _cancel(stub, run.id, ALICE))
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert refused.details() == (
        f"run_id: run {run.id} belongs to user 'bob'; only its owner can cancel it (you are 'alice')"
    )
    assert dict(refused.trailing_metadata())[FIELD_KEY] == "run_id"
    assert _redis(store) == before
    assert _cancel(stub, run.id, BOB).status == common_pb2.RUN_STATUS_CANCELLED

    before = _redis(store)
    refused = _refused(lambda: _resume(stub, run.id, ALICE))
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "belongs to user 'bob'; only its owner can resume it" in refused.details()
    assert _redis(store) == before
    resumed = _resume(stub, run.id, BOB)
    assert (resumed.status, resumed.owner) == (common_pb2.RUN_STATUS_RESUMING, "bob")


def test_runs_without_an_owner_are_anyones(stub, store, chat_data):
    # Written as before runs had owners (no `owner` field), and by a gateway without tokens ("anonymous").
    old = store.create_run(RunRecord(id="r-before-owners", spec={**SPEC, "data": chat_data.name}))
    store.r.hdel(store.run_key(old.id), "owner")
    assert "owner" not in store.r.hgetall(store.run_key(old.id))
    assert store.get_run(old.id).owner == ""
    assert _get(stub, old.id, ALICE).owner == ""
    assert _cancel(stub, old.id, ALICE).status == common_pb2.RUN_STATUS_CANCELLED
    assert _resume(stub, old.id, BOB).status == common_pb2.RUN_STATUS_RESUMING

    open_lab = store.create_run(
        RunRecord(id="r-open-lab", spec={**SPEC, "data": chat_data.name}, owner=ANONYMOUS)
    )
    assert _get(stub, open_lab.id, BOB).owner == ANONYMOUS
    assert _cancel(stub, open_lab.id, BOB).status == common_pb2.RUN_STATUS_CANCELLED
