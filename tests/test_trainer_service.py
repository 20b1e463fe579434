"""The trainer service on a loopback port with real Redis: health, reflection, registry, validation (each
bad input gets its status code and nothing is written), slots, cancel with a usable checkpoint, resume."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2
from peftlab.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from service_helpers import health_status, reflected_services, start_trainer, wait_for

from services.common.interceptors import FIELD_KEY

FAST = {
    "iters": 3,
    "batch_size": 2,
    "eval_every": 0,
    "save_every": 0,
    "test_samples": 0,
    "val_batches": 1,
    "warmup_steps": 0,
}


@pytest.fixture
def trainer(redis_url, redis_prefix, chat_data, tmp_path):
    running = start_trainer(
        redis_url, redis_prefix, chat_data.parent, tmp_path / "runs", slots=1, trainer_id="tr-a"
    )
    yield running
    running.stop()


@pytest.fixture
def stub(trainer):
    return trainer_pb2_grpc.TrainerStub(trainer.channel)


def _spec(chat_data, **fields) -> common_pb2.RunSpec:
    values = {"model": "tiny-llama", "data": chat_data.name, **FAST, **fields}
    from services.common.codec import spec_to_proto

    return spec_to_proto(values)


def _error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def _field(error: grpc.RpcError) -> str:
    return dict(error.trailing_metadata() or ()).get(FIELD_KEY, "")


def test_health_and_reflection(trainer):
    assert health_status(trainer.address) == health_pb2.HealthCheckResponse.SERVING
    assert health_status(trainer.address, "peftlab.v1.Trainer") == health_pb2.HealthCheckResponse.SERVING
    assert reflected_services(trainer.address) == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "peftlab.v1.Trainer",
    ]


def test_registers_with_hardware_slots_and_version(trainer, stub, store):
    info = stub.GetHardware(trainer_pb2.GetHardwareRequest(), timeout=10).trainer
    assert info.id == "tr-a" and info.address == trainer.address and info.slots == 1
    assert info.hardware.device_kind in ("cpu", "apple", "cuda") and info.hardware.total_memory_bytes > 0
    assert info.version
    registered = store.get_trainer("tr-a")
    assert (
        registered.address == trainer.address
        and registered.hardware["device_kind"] == info.hardware.device_kind
    )
    first = registered.heartbeat_at
    wait_for(lambda: store.get_trainer("tr-a").heartbeat_at > first, 5, what="a heartbeat")
    assert 0 < store.r.pttl(store.trainer_key("tr-a")) <= 3000


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"rank": 0}, grpc.StatusCode.INVALID_ARGUMENT, "spec.rank"),
        ({"method": "magic"}, grpc.StatusCode.INVALID_ARGUMENT, "spec.method"),
        ({"learning_rate": -1.0}, grpc.StatusCode.INVALID_ARGUMENT, "spec.learning_rate"),
        ({"model": "../../etc/passwd"}, grpc.StatusCode.INVALID_ARGUMENT, "spec.model"),
        ({"data": "../../../etc"}, grpc.StatusCode.INVALID_ARGUMENT, "spec.data"),
        ({"model": "/etc"}, grpc.StatusCode.INVALID_ARGUMENT, "spec.model"),
        ({"model": "no-such-model"}, grpc.StatusCode.NOT_FOUND, "spec.model"),
        ({"data": "no-such-data"}, grpc.StatusCode.NOT_FOUND, "spec.data"),
    ],
)
def test_bad_spec_gets_its_code_and_writes_nothing(stub, store, chat_data, fields, code, field):
    error = _error(
        lambda: stub.StartRun(trainer_pb2.StartRunRequest(spec=_spec(chat_data, **fields)), timeout=10)
    )
    assert error.code() == code
    assert error.details().startswith(field + ":")
    assert _field(error) == field
    assert list(store.r.scan_iter(f"{store.prefix}run*")) == []


def test_bad_ids_and_unknown_runs(stub, chat_data):
    bad = _error(
        lambda: stub.StartRun(trainer_pb2.StartRunRequest(spec=_spec(chat_data), run_id="../x"), timeout=10)
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT and _field(bad) == "run_id"
    missing = _error(lambda: stub.GetRun(trainer_pb2.GetRunRequest(run_id="nope"), timeout=10))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    assert (
        _error(lambda: stub.CancelRun(trainer_pb2.CancelRunRequest(run_id="nope"), timeout=10)).code()
        == grpc.StatusCode.NOT_FOUND
    )
    watch = _error(lambda: list(stub.WatchRun(trainer_pb2.WatchRunRequest(run_id="nope"), timeout=10)))
    assert watch.code() == grpc.StatusCode.NOT_FOUND
    token = _error(lambda: stub.ListRuns(trainer_pb2.ListRunsRequest(page_token="x"), timeout=10))
    assert token.code() == grpc.StatusCode.INVALID_ARGUMENT and _field(token) == "page_token"
    size = _error(lambda: stub.ListRuns(trainer_pb2.ListRunsRequest(page_size=10_000), timeout=10))
    assert size.code() == grpc.StatusCode.INVALID_ARGUMENT and _field(size) == "page_size"
    gen = _error(
        lambda: list(stub.Generate(trainer_pb2.GenerateRequest(model="../../etc", prompt="hi"), timeout=10))
    )
    assert gen.code() == grpc.StatusCode.INVALID_ARGUMENT and _field(gen) == "model"
    empty = _error(
        lambda: list(stub.Generate(trainer_pb2.GenerateRequest(model="tiny-llama", prompt=""), timeout=10))
    )
    assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT and _field(empty) == "prompt"


def _events(stub, run_id: str, after: str = "") -> list[common_pb2.RunEvent]:
    return [
        r.event
        for r in stub.WatchRun(trainer_pb2.WatchRunRequest(run_id=run_id, after_event_id=after), timeout=300)
    ]


def test_run_to_completion_then_evaluate_and_generate(stub, store, chat_data, tmp_path):
    run = stub.StartRun(trainer_pb2.StartRunRequest(spec=_spec(chat_data), name="tiny"), timeout=30).run
    assert run.status == common_pb2.RUN_STATUS_RUNNING and run.trainer_id == "tr-a" and run.attempt == 1
    events = _events(stub, run.id)
    kinds = [e.WhichOneof("payload") for e in events]
    statuses = [common_pb2.RunStatus.Name(e.status.status) for e in events if e.HasField("status")]
    assert statuses == [
        "RUN_STATUS_QUEUED",
        "RUN_STATUS_PLACED",
        "RUN_STATUS_RUNNING",
        "RUN_STATUS_SUCCEEDED",
    ], events[-1]
    assert kinds.count("step") == 3 and "started" in kinds and "result" in kinds
    steps = [e.step for e in events if e.HasField("step")]
    assert [s.step for s in steps] == [1, 2, 3] and all(s.train_loss > 0 for s in steps)
    record = store.get_run(run.id)
    assert record.metrics["steps"] == 3 and record.progress["step"] == 3
    assert store.trainer_slot_runs("tr-a") == set()
    assert (tmp_path / "runs" / run.id / "adapters.safetensors").exists()

    evaluation = stub.Evaluate(
        trainer_pb2.EvaluateRequest(run_id=run.id, split="valid", max_batches=1), timeout=120
    )
    assert evaluation.loss > 0 and evaluation.perplexity > 1
    pieces = list(
        stub.Generate(
            trainer_pb2.GenerateRequest(run_id=run.id, prompt="Ana is 30", max_tokens=8), timeout=120
        )
    )
    assert pieces[-1].done and len(pieces) >= 2


def test_slots_full_then_cancel_leaves_a_checkpoint_and_resume_continues(stub, store, chat_data, tmp_path):
    long = _spec(chat_data, iters=2000, save_every=2)
    run = stub.StartRun(trainer_pb2.StartRunRequest(spec=long), timeout=30).run
    full = _error(lambda: stub.StartRun(trainer_pb2.StartRunRequest(spec=_spec(chat_data)), timeout=10))
    assert full.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "slot" in full.details()
    assert store.count_by_status() == {"RUNNING": 1}  # the refused run left no trace

    # Wait for a checkpoint, then cancel: the child checkpoints and stops.
    wait_for(lambda: store.get_run(run.id).progress.get("step", 0) >= 4, 180, 0.5, "a few steps")
    stub.CancelRun(trainer_pb2.CancelRunRequest(run_id=run.id, reason="test"), timeout=10)
    wait_for(lambda: store.status_of(run.id) == "CANCELLED", 120, 0.2, "CANCELLED")
    stopped_at = int(store.get_run(run.id).progress["step"])
    assert list((tmp_path / "runs" / run.id / "checkpoints").glob("step_*/state.json"))

    last = store.get_run(run.id).last_event_id
    resumed = stub.ResumeRun(trainer_pb2.ResumeRunRequest(run_id=run.id), timeout=30).run
    assert resumed.status == common_pb2.RUN_STATUS_RUNNING and resumed.attempt == 2
    wait_for(
        lambda: store.get_run(run.id).progress.get("step", 0) > stopped_at, 180, 0.5, "steps after resume"
    )
    later = store.read_events(run.id, last)
    first_step = next(e.data["step"] for e in later if e.kind == "step")
    assert first_step <= stopped_at + 1  # continued from the checkpoint, not from step 1
    assert first_step > 1
    stub.CancelRun(trainer_pb2.CancelRunRequest(run_id=run.id), timeout=10)
    wait_for(lambda: store.status_of(run.id) == "CANCELLED", 120, 0.2, "CANCELLED again")
