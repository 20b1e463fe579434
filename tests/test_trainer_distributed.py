"""A data-parallel run through the services: the gateway books both of a trainer's slots for a `workers: 2`
run at once (a 1-slot run waits meanwhile), the trainer starts two ring ranks, a SIGKILLed rank makes the
run resume from its newest checkpoint with the curve it had, and it succeeds; the Lua booking takes all of a
run's slots or none, and a run no trainer has the slots for says so."""

from __future__ import annotations

import os
import signal

import pytest
from peftlab.v1 import gateway_pb2, gateway_pb2_grpc
from service_helpers import start_gateway, start_trainer, wait_for

from services.common.codec import spec_to_proto
from services.common.errors import ResourceExhausted
from services.common.records import RunRecord, TrainerRecord
from services.gateway.placement import choose_trainer, waiting_reason

FAST = {"eval_every": 0, "test_samples": 0, "val_batches": 1, "warmup_steps": 0, "max_seq_length": 128}


def _submit(stub, chat_data, **fields):
    spec = spec_to_proto({"model": "tiny-llama", "data": chat_data.name, **FAST, **fields})
    return stub.SubmitRun(gateway_pb2.SubmitRunRequest(spec=spec), timeout=10).run


def test_a_two_worker_run_books_two_slots_survives_a_killed_rank_and_succeeds(
    redis_url, redis_prefix, chat_data, tmp_path, store
):
    roots = chat_data.parent, tmp_path / "runs"
    trainer = start_trainer(
        redis_url, redis_prefix, *roots, slots=2, trainer_id="tr-dp", recovery_backoff=0.2
    )
    gateway = start_gateway(redis_url, redis_prefix, *roots)
    try:
        stub = gateway_pb2_grpc.GatewayStub(gateway.channel)
        dp = _submit(stub, chat_data, workers=2, batch_size=4, iters=7, save_every=3)
        wait_for(lambda: store.status_of(dp.id) == "RUNNING", 60, 0.1, "the DP run to start")
        assert store.trainer_slot_runs("tr-dp") == {dp.id}
        assert store.r.scard(store.slots_key("tr-dp")) == 2  # both slots, booked at once
        assert store.get_trainer("tr-dp").free_slots == 0
        single = _submit(stub, chat_data, iters=2, batch_size=2)

        wait_for(
            lambda: store.get_run(dp.id).progress.get("step", 0) >= 4, 300, 0.2, "step 4 (checkpoint at 3)"
        )
        assert store.status_of(single.id) == "QUEUED"  # no slot left for it while the DP run holds both
        job = trainer.core.processes.get(dp.id)
        assert len(job.ranks) == 1
        os.kill(job.ranks[0].pid, signal.SIGKILL)

        wait_for(lambda: store.status_of(dp.id) in ("SUCCEEDED", "FAILED"), 400, 0.2, "the DP run to end")
        record = store.get_run(dp.id)
        assert record.status == "SUCCEEDED", record.error
        assert record.attempt == 2 and record.metrics["steps"] == 7
        assert "x2 (ring)" in record.metrics["backend"]
        resumed = [
            e.data["reason"]
            for e in store.read_events(dp.id, "")
            if e.kind == "status" and e.data["status"] == "RESUMING"
        ]
        assert len(resumed) == 1 and "SIGKILL" in resumed[0]
        # Exact resume: the steps trained again after the checkpoint have the losses they had before.
        by_step: dict[int, list[float]] = {}
        for e in store.read_events(dp.id, ""):
            if e.kind == "step":
                by_step.setdefault(e.data["step"], []).append(e.data["train_loss"])
        assert sorted(by_step) == list(range(1, 8))
        again = {s: v for s, v in by_step.items() if len(v) > 1}
        assert again and min(again) == 4, by_step  # resumed from the step-3 checkpoint
        assert all(abs(v[0] - v[1]) < 1e-5 for v in again.values()), again

        wait_for(lambda: store.status_of(single.id) == "SUCCEEDED", 300, 0.2, "the queued run to finish")
        assert store.r.scard(store.slots_key("tr-dp")) == 0
    finally:
        gateway.stop()
        trainer.stop()


def test_the_status_machine_books_all_of_a_runs_slots_or_none(store):
    store.register_trainer(TrainerRecord(id="t3", address="10.0.0.3:50052", slots=3), ttl_seconds=60)
    store.create_run(RunRecord(id="one", spec={}), claim="t3")
    with pytest.raises(ResourceExhausted, match="no free slot"):
        store.create_run(RunRecord(id="three", spec={"workers": 3}), claim="t3")
    assert store.r.scard(store.slots_key("t3")) == 1  # nothing half-booked
    store.create_run(RunRecord(id="two", spec={"workers": 2}))
    store.transition("two", "PLACED", claim="t3", queue="remove", set_fields={"trainer": "t3"})
    trainer = store.get_trainer("t3")
    assert trainer.run_ids == ["one", "two"] and trainer.busy_slots == 3 and trainer.free_slots == 0
    store.transition("two", "CANCELLED", release=True)
    assert store.trainer_slot_runs("t3") == {"one"} and store.get_trainer("t3").free_slots == 2


def test_placement_waits_for_a_trainer_with_the_slots_and_says_so():
    run = RunRecord(id="dp", spec={"workers": 4}, status="QUEUED")
    small = [TrainerRecord(id=f"t{i}", address="", slots=2) for i in range(3)]
    assert choose_trainer(small, run) is None  # 6 free slots in all, but on no one trainer
    assert "waiting for a trainer with 4 slots" in waiting_reason(run, small)
    big = TrainerRecord(id="big", address="", slots=4)
    assert choose_trainer([*small, big], run) is big and waiting_reason(run, [*small, big]) == ""
