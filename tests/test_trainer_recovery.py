"""A run whose process dies is resumed by its trainer by itself: from the newest checkpoint with the same
micro-batch after a SIGKILL, with half the micro-batch and twice the accumulation after it ran out of memory
(enforced: an address-space cap on the run's process), each time recorded as a RESUMING status event with
the reason; bounded, then FAILED with what was tried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from service_helpers import start_trainer, wait_for

from services.common.spec import RunSpec
from services.trainer.recovery import Attempts, Death, decide, smaller_micro_batch

FAST = {"eval_every": 0, "test_samples": 0, "val_batches": 1, "warmup_steps": 0, "max_seq_length": 256}


def _start(trainer, chat_data, **fields):
    spec = RunSpec.from_dict({"model": "tiny-llama", "data": chat_data.name, **FAST, **fields})
    return trainer.core.start_run(spec, name="recovery")


def _statuses(store, run_id):
    return [
        (e.data["status"], e.data.get("reason", ""))
        for e in store.read_events(run_id, "")
        if e.kind == "status"
    ]


def test_a_sigkilled_run_process_resumes_from_its_checkpoint(
    redis_url, redis_prefix, chat_data, tmp_path, store
):
    trainer = start_trainer(
        redis_url, redis_prefix, chat_data.parent, tmp_path / "runs", trainer_id="tr-k", recovery_backoff=0.2
    )
    try:
        run = _start(trainer, chat_data, iters=10, batch_size=2, save_every=3)
        wait_for(
            lambda: store.get_run(run.id).progress.get("step", 0) >= 4, 240, 0.2, "step 4 (checkpoint at 3)"
        )
        job = trainer.core.processes.get(run.id)
        os.kill(job.process.pid, signal.SIGKILL)
        wait_for(lambda: store.status_of(run.id) in ("SUCCEEDED", "FAILED"), 300, 0.2, "the run to end")
        record = store.get_run(run.id)
        assert record.status == "SUCCEEDED", record.error
        assert record.attempt == 2 and record.metrics["steps"] == 10
        resumed = [r for s, r in _statuses(store, run.id) if s == "RESUMING"]
        assert len(resumed) == 1 and "SIGKILL" in resumed[0] and "retry 1 of 3" in resumed[0]
        steps = [e.data["step"] for e in store.read_events(run.id, "") if e.kind == "step"]
        restart = next(i for i in range(1, len(steps)) if steps[i] <= steps[i - 1])
        assert 1 < steps[restart] <= 5  # continued from the checkpoint, not from step 1
        assert store.trainer_slot_runs("tr-k") == set()
    finally:
        trainer.stop()


def _engine_baseline_vms() -> int:
    """Virtual size of a fresh process that has loaded the engine (what a run's process starts from)."""
    code = "import psutil, services.trainer.jobs, services.trainer.engine.api; print(psutil.Process().memory_info().vms)"
    return int(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )


def test_out_of_memory_resumes_with_half_the_micro_batch(redis_url, redis_prefix, chat_data, tmp_path, store):
    # Measured on this CPU with the chunked-head step (tiny model, 256-token rows): micro-batch 16 peaks
    # ~2.1 GB of address space above the engine's start, micro-batch 8 ~1.5 GB. A cap of 1.8 GB above the
    # start fails 16 and fits 8.
    limit_mb = _engine_baseline_vms() // 2**20 + 1800
    trainer = start_trainer(
        redis_url,
        redis_prefix,
        chat_data.parent,
        tmp_path / "runs",
        trainer_id="tr-m",
        recovery_backoff=0.2,
        run_memory_limit_mb=limit_mb,
    )
    try:
        run = _start(trainer, chat_data, iters=2, batch_size=16, save_every=0)
        wait_for(lambda: store.status_of(run.id) in ("SUCCEEDED", "FAILED"), 300, 0.2, "the run to end")
        record = store.get_run(run.id)
        assert record.status == "SUCCEEDED", record.error
        resumed = [r for s, r in _statuses(store, run.id) if s == "RESUMING"]
        assert len(resumed) == 1, resumed
        assert "out of memory" in resumed[0] and "micro-batch 16 x accumulation 1" in resumed[0]
        assert "micro-batch 8 x accumulation 2 (same 16 rows per step" in resumed[0]
        assert (record.metrics["batch_size"], record.metrics["grad_accumulation"]) == (8, 2)
    finally:
        trainer.stop()


def test_the_recovery_is_bounded_and_says_what_it_tried():
    segv = Death(-signal.SIGSEGV, None, memory_capped=True, oom_killed=False)
    first = decide(segv, 8, 1, Attempts(), 2, 3, 1.0)
    assert (
        first.resume and (first.batch_size, first.grad_accumulation) == (4, 2) and first.delay_seconds == 1.0
    )
    second = decide(segv, 4, 2, first.attempts, 2, 3, 1.0)
    assert (
        second.resume
        and (second.batch_size, second.grad_accumulation) == (2, 4)
        and second.delay_seconds == 2.0
    )
    third = decide(segv, 2, 4, second.attempts, 2, 3, 1.0)
    assert (
        not third.resume
        and "out of memory 3 times" in third.reason
        and "micro-batch 2 x accumulation 4" in third.reason
    )
    # Micro-batch 1 cannot be halved; an uncapped segfault is a crash, resumed as it was.
    assert "even micro-batch 1" in decide(segv, 1, 8, Attempts(), 2, 3, 1.0).reason
    crash = decide(Death(-signal.SIGSEGV, None, False, False), 4, 1, Attempts(), 2, 3, 1.0)
    assert crash.resume and crash.batch_size == 4 and not crash.memory
    # A second SIGKILL in a row (no cgroup evidence) is taken for memory.
    kill = Death(-signal.SIGKILL, None, False, False)
    once = decide(kill, 4, 1, Attempts(), 2, 3, 1.0)
    assert once.resume and once.batch_size == 4
    assert decide(kill, 4, 1, once.attempts, 2, 3, 1.0).batch_size == 2
    # An error the engine raised on purpose (bad data, a spec it refuses) is not retried.
    bad = Death(
        1, {"code": "INVALID_ARGUMENT", "field": "spec.data", "message": "train.jsonl:3: ..."}, False, False
    )
    assert not decide(bad, 4, 1, Attempts(), 2, 3, 1.0).resume
    memory = Death(
        1, {"code": "RESOURCE_EXHAUSTED", "message": "out of memory", "cause": "memory"}, False, False
    )
    assert decide(memory, 6, 1, Attempts(), 2, 3, 1.0).batch_size == 3
    assert smaller_micro_batch(6, 2) == (3, 4) and smaller_micro_batch(7, 1) == (1, 7)
