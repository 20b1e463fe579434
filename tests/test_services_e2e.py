"""End to end, no mocks: Redis + trainers + gateway on loopback ports, LoRA runs of the tiny model.

1. Submit through the gateway, watch to completion across a gateway restart (resuming from the last event
   id), check the final metrics in Redis and the artifacts on disk, generate with the adapter.
2. Two trainers: two runs execute in parallel, one on each; a third waits in the queue and starts when a
   slot frees; a trainer that shuts down has its run checkpointed, LOST, and resumed on the other trainer.
3. Redis restarts in the middle of a run: the run finishes and its state is intact (AOF).
"""

from __future__ import annotations

import math
import time

import grpc
import pytest
from peftlab.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, trainer_pb2
from service_helpers import start_gateway, start_trainer, wait_for

from services.common.codec import spec_to_proto
from services.common.redis_server import start_redis
from services.common.redis_store import RunStore

SPEC = {
    "model": "tiny-llama",
    "method": "lora",
    "rank": 4,
    "batch_size": 2,
    "warmup_steps": 0,
    "val_batches": 1,
}


def _submit(stub, chat_data, **fields) -> common_pb2.Run:
    spec = spec_to_proto({**SPEC, "data": chat_data.name, **fields})
    return stub.SubmitRun(gateway_pb2.SubmitRunRequest(spec=spec, name="e2e"), timeout=30).run


def test_run_through_the_gateway_survives_a_gateway_restart(
    redis_url, redis_prefix, chat_data, tmp_path, store
):
    runs_root = tmp_path / "runs"
    trainer = start_trainer(redis_url, redis_prefix, chat_data.parent, runs_root, trainer_id="tr-e2e")
    gateway = start_gateway(redis_url, redis_prefix, chat_data.parent, runs_root)
    port = gateway.grpc_server.port
    try:
        stub = gateway_pb2_grpc.GatewayStub(gateway.channel)
        run = _submit(stub, chat_data, iters=8, eval_every=4, save_every=4, test_samples=2, max_new_tokens=16)
        assert run.status == common_pb2.RUN_STATUS_RUNNING and run.trainer_id == "tr-e2e"

        # Watch until the first step, then restart the gateway under the watcher's feet.
        received: list[common_pb2.RunEvent] = []
        stream = stub.WatchRun(trainer_pb2.WatchRunRequest(run_id=run.id), timeout=300)
        with pytest.raises(grpc.RpcError):
            for response in stream:
                received.append(response.event)
                if response.event.HasField("step"):
                    gateway.stop(grace=0)
        gateway = start_gateway(redis_url, redis_prefix, chat_data.parent, runs_root, port=port)
        stub = gateway_pb2_grpc.GatewayStub(gateway.channel)
        resumed = stub.WatchRun(
            trainer_pb2.WatchRunRequest(run_id=run.id, after_event_id=received[-1].id), timeout=300
        )
        received += [r.event for r in resumed]

        # The two watches together are the run's whole stream: no gap, no duplicate, ending with SUCCEEDED.
        assert [e.id for e in received] == [e.id for e in store.read_events(run.id, count=10_000)]
        statuses = [e.status.status for e in received if e.HasField("status")]
        assert statuses[-1] == common_pb2.RUN_STATUS_SUCCEEDED, received[-1]
        assert [e.step.step for e in received if e.HasField("step")] == list(range(1, 9))
        assert {4, 8} <= {e.eval.step for e in received if e.HasField("eval")}
        result = next(e.result for e in received if e.HasField("result"))
        assert result.steps == 8 and result.trainable_parameters > 0

        # Final metrics in Redis, artifacts on disk.
        record = store.get_run(run.id)
        assert record.status == "SUCCEEDED" and record.metrics["steps"] == 8
        assert math.isfinite(record.metrics["final_train_loss"]) and record.metrics["task"]["n"] == 2
        assert store.trainer_slot_runs("tr-e2e") == set()
        run_dir = runs_root / run.id
        for name in (
            "adapters.safetensors",
            "adapter_config.json",
            "metrics.jsonl",
            "spec.json",
            "result.json",
        ):
            assert (run_dir / name).exists(), name
        assert list((run_dir / "checkpoints").glob("step_*/state.json"))
        got = stub.GetRun(trainer_pb2.GetRunRequest(run_id=run.id), timeout=5).run
        assert got.metrics.steps == 8 and got.finished_at.seconds > 0 and got.progress.step == 8

        pieces = list(
            stub.Generate(
                trainer_pb2.GenerateRequest(run_id=run.id, prompt="Ana is 30.", max_tokens=6), timeout=120
            )
        )
        assert pieces[-1].done and "".join(p.text for p in pieces)
    finally:
        gateway.stop()
        trainer.stop()


def test_two_trainers_in_parallel_queue_and_resume_after_a_trainer_leaves(
    redis_url, redis_prefix, chat_data, tmp_path, store
):
    runs_root = tmp_path / "runs"
    trainers = {
        name: start_trainer(redis_url, redis_prefix, chat_data.parent, runs_root, trainer_id=name)
        for name in ("tr-a", "tr-b")
    }
    gateway = start_gateway(redis_url, redis_prefix, chat_data.parent, runs_root)
    try:
        stub = gateway_pb2_grpc.GatewayStub(gateway.channel)
        long = {"iters": 400, "save_every": 2, "eval_every": 0, "test_samples": 0}
        first, second = _submit(stub, chat_data, **long), _submit(stub, chat_data, **long)
        assert {first.trainer_id, second.trainer_id} == {"tr-a", "tr-b"}
        # One shared runs root: both trainers read the same id from it (services/common/runs_root.py).
        assert store.get_trainer("tr-a").runs_root_id == store.get_trainer("tr-b").runs_root_id != ""

        def both_training() -> bool:
            records = [store.get_run(first.id), store.get_run(second.id)]
            return all(r.status == "RUNNING" and r.progress.get("step", 0) >= 2 for r in records)

        wait_for(both_training, 240, 0.5, "both runs stepping at once")

        # Every slot is busy: the third run waits in the queue.
        third = _submit(stub, chat_data, iters=2, eval_every=0, save_every=0, test_samples=0)
        assert third.status == common_pb2.RUN_STATUS_QUEUED

        # tr-a leaves (SIGTERM path): its run checkpoints, is LOST, and is queued to resume.
        on_a = first if first.trainer_id == "tr-a" else second
        on_b = second if on_a is first else first
        trainers["tr-a"].stop()
        assert store.status_of(on_a.id) in ("LOST", "RESUMING")
        stopped_at = int(store.get_run(on_a.id).progress["step"])
        statuses = [e.data["status"] for e in store.read_events(on_a.id, count=10_000) if e.kind == "status"]
        assert statuses[-2:] == ["LOST", "RESUMING"] or statuses[-1] == "LOST"

        # Free tr-b: the queue is served oldest first, so the lost run resumes there before the third.
        stub.CancelRun(trainer_pb2.CancelRunRequest(run_id=on_b.id), timeout=10)
        wait_for(
            lambda: store.get_run(on_a.id).attempt == 2 and store.status_of(on_a.id) == "RUNNING",
            120,
            0.5,
            "resume",
        )
        resumed = store.get_run(on_a.id)
        assert resumed.trainer == "tr-b" and resumed.previous_trainer == "tr-a"
        assert store.status_of(third.id) == "QUEUED"
        wait_for(
            lambda: store.get_run(on_a.id).progress.get("step", 0) > stopped_at,
            120,
            0.5,
            "steps after resume",
        )
        events = store.read_events(on_a.id, count=10_000)
        resume_at = max(
            i for i, e in enumerate(events) if e.kind == "status" and e.data["status"] == "RUNNING"
        )
        restart = next(e.data["step"] for e in events[resume_at:] if e.kind == "step")
        assert restart == stopped_at + 1  # continued from the checkpoint written at shutdown

        # Cancelling it frees tr-b for the queued run, which then runs to the end.
        stub.CancelRun(trainer_pb2.CancelRunRequest(run_id=on_a.id), timeout=10)
        wait_for(lambda: store.status_of(third.id) == "SUCCEEDED", 180, 0.5, "the queued run to run")
        assert store.get_run(third.id).trainer == "tr-b"
        assert store.status_of(on_a.id) == "CANCELLED"
        assert store.status_of(on_b.id) == "CANCELLED"
    finally:
        gateway.stop()
        for trainer in trainers.values():
            trainer.stop()


def test_a_redis_restart_mid_run_keeps_the_run_and_its_state(chat_data, tmp_path, redis_prefix):
    server = start_redis(tmp_path / "redis")
    port = server.port
    trainer = start_trainer(server.url, redis_prefix, chat_data.parent, tmp_path / "runs", trainer_id="tr-r")
    gateway = start_gateway(server.url, redis_prefix, chat_data.parent, tmp_path / "runs")
    store = RunStore.from_url(server.url, redis_prefix)
    try:
        stub = gateway_pb2_grpc.GatewayStub(gateway.channel)
        run = _submit(stub, chat_data, iters=12, eval_every=0, save_every=6, test_samples=0)
        wait_for(lambda: store.get_run(run.id).progress.get("step", 0) >= 2, 120, 0.2, "first steps")
        server.stop()
        time.sleep(2.0)  # the run keeps training; its events and heartbeats fail meanwhile
        server = start_redis(tmp_path / "redis", port=port)
        wait_for(
            lambda: store.status_of(run.id) == "SUCCEEDED", 180, 0.5, "the run to finish after the restart"
        )
        record = store.get_run(run.id)
        assert record.metrics["steps"] == 12 and store.trainer_slot_runs("tr-r") == set()
        assert [t.id for t in store.list_trainers()] == ["tr-r"]  # heartbeats re-registered it
    finally:
        store.close()
        gateway.stop()
        trainer.stop()
        server.stop()
