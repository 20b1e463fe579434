"""Faults injected by the test itself against real services on loopback (tiny model, a few dozen steps), each
ending with no run lost, no event recorded twice, and Redis agreeing with the run dir:

- Redis kill -9 shorter than the heartbeat TTL: the run trains on, its events are buffered and flushed in
  order (the same attempt; every step exactly once).
- Redis kill -9 longer than the TTL: the trainer's watchdog stops the run process (the gateway takes the run
  for lost); once Redis is back the run resumes from its checkpoint as attempt 2 and finishes.
- a trainer SIGKILLed with a second trainer up (the run resumes there) and without one (it resumes when the
  trainer comes back under the same id).
- a full disk (tmpfs) and a read-only run dir: RESOURCE_EXHAUSTED / FAILED_PRECONDITION naming the path and
  what to do; after the fix, ResumeRun finishes the run.
- an address-space cap on the trainer (prlimit): the run resumes with half the micro-batch.
- a password-protected Redis: the services work with redis://:pw@…; a wrong password is said in words.

Faults injected elsewhere, not repeated here: a run process SIGKILLed, and a cap on the run process itself
(tests/test_trainer_recovery.py); a trainer leaving with SIGTERM while a second one takes its run, a gateway
restart mid-watch, a graceful Redis restart (tests/test_services_e2e.py); the comparator SIGKILLed
mid-study (tests/test_comparator.py). Timings are printed ("fault: ... recovered in N s"; pytest -s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import redis
from peftlab.v1 import gateway_pb2, gateway_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from service_helpers import start_gateway, start_trainer, wait_for

from services.common.codec import spec_to_proto
from services.common.errors import FailedPrecondition, ResourceExhausted
from services.common.paths import models_dir
from services.common.redis_server import start_redis
from services.common.redis_store import RedisRefused, RunStore

REPO = Path(__file__).resolve().parents[2]
SPEC = {
    "model": "tiny-llama",
    "method": "lora",
    "rank": 4,
    "batch_size": 2,
    "max_seq_length": 64,
    "warmup_steps": 0,
    "eval_every": 0,
    "test_samples": 0,
    "val_batches": 1,
}


def _spec(chat_data: Path, **fields) -> dict:
    return {**SPEC, "data": chat_data.name, **fields}


def _start(trainer, spec: dict, run_id: str = "") -> str:
    """StartRun on the trainer itself (no gateway: nothing re-places the run behind the test's back)."""
    request = trainer_pb2.StartRunRequest(spec=spec_to_proto(spec), run_id=run_id, name="fault")
    return trainer_pb2_grpc.TrainerStub(trainer.channel).StartRun(request, timeout=30).run.id


def _resume(trainer, run_id: str) -> None:
    trainer_pb2_grpc.TrainerStub(trainer.channel).ResumeRun(
        trainer_pb2.ResumeRunRequest(run_id=run_id), timeout=30
    )


def _report(fault: str, seconds: float) -> None:
    print(f"\nfault: {fault}: recovered in {seconds:.1f} s")


def _steps_by_attempt(store: RunStore, run_id: str) -> list[list[int]]:
    """The step numbers of each attempt, in stream order (an attempt starts at its RUNNING status event)."""
    attempts: list[list[int]] = []
    for event in store.read_events(run_id, count=10_000):
        if event.kind == "status" and event.data["status"] == "RUNNING":
            attempts.append([])
        elif event.kind == "step":
            attempts[-1].append(int(event.data["step"]))
    return attempts


def _assert_whole(store: RunStore, run_id: str, runs_root: Path, iters: int, attempts: int) -> None:
    """SUCCEEDED after `attempts` attempts; each attempt's steps in order with none twice and none missing;
    the record's progress and metrics, and the run dir's result.json, all at the last step; no slot held."""
    record = store.get_run(run_id)
    assert record.status == "SUCCEEDED", record.error
    assert record.attempt == attempts
    steps = _steps_by_attempt(store, run_id)
    assert len(steps) == attempts, steps
    for done in steps:
        assert done == list(range(done[0], done[0] + len(done))) if done else True, done
    assert steps[0][0] == 1 and steps[-1][-1] == iters, steps
    for before, after in zip(steps, steps[1:], strict=False):
        assert after[0] <= (before[-1] + 1 if before else 1)  # resumed from a checkpoint it had reached
    assert record.progress["step"] == iters == record.metrics["steps"]
    assert json.loads((runs_root / run_id / "result.json").read_text())["steps"] == iters
    assert store.trainer_slot_runs(record.trainer) == set()


def _durable(url: str) -> None:
    """fsync every write before its reply. With the default everysec a kill -9 may lose up to ~2 s of
    acknowledged writes, which no client can notice or replay (the buffer test, killing Redis right after
    creating its run, once found that run's writes refused after the restart)."""
    with redis.Redis.from_url(url) as client:
        client.config_set("appendfsync", "always")


def _steps_on_disk(runs_root: Path, run_id: str) -> int:
    path = runs_root / run_id / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if '"kind": "step"' in line)


# ---- Redis killed ----------------------------------------------------------------------------------------


def test_redis_killed_shorter_than_the_ttl_loses_no_event(chat_data, tmp_path, redis_prefix):
    server = start_redis(tmp_path / "redis")
    _durable(server.url)
    runs_root = tmp_path / "runs"
    trainer = start_trainer(
        server.url, redis_prefix, chat_data.parent, runs_root, trainer_id="tr-s", heartbeat_ttl=15.0
    )
    store = RunStore.from_url(server.url, redis_prefix)
    try:
        iters = 40
        run_id = _start(trainer, _spec(chat_data, iters=iters, save_every=0))
        wait_for(lambda: store.get_run(run_id).progress.get("step", 0) >= 2, 120, 0.1, "first steps")
        server.process.kill()
        killed = time.monotonic()
        stepped = _steps_on_disk(runs_root, run_id)
        # Steps trained with Redis away (their events can only be in the child's buffer).
        wait_for(
            lambda: _steps_on_disk(runs_root, run_id) >= stepped + 3, 60, 0.05, "steps during the outage"
        )
        server = start_redis(tmp_path / "redis", port=server.port)
        _durable(server.url)
        back = time.monotonic()
        down = back - killed
        assert down < 15.0, f"the outage ({down:.1f} s) was meant to be shorter than the TTL"
        trained = _steps_on_disk(runs_root, run_id)
        wait_for(lambda: store.get_run(run_id).progress.get("step", 0) >= trained, 60, 0.05, "the flush")
        caught_up = time.monotonic() - back
        wait_for(lambda: store.status_of(run_id) == "SUCCEEDED", 180, 0.2, "the run to finish")
        _assert_whole(store, run_id, runs_root, iters, attempts=1)
        _report(f"Redis kill -9 for {down:.1f} s (< TTL 15 s); events caught up after it returned", caught_up)
    finally:
        store.close()
        trainer.stop()
        server.stop()


def test_redis_killed_longer_than_the_ttl_stops_and_resumes_the_run(chat_data, tmp_path, redis_prefix):
    server = start_redis(tmp_path / "redis")
    _durable(server.url)
    runs_root = tmp_path / "runs"
    trainer = start_trainer(
        server.url, redis_prefix, chat_data.parent, runs_root, trainer_id="tr-l", heartbeat_ttl=2.0
    )
    gateway = start_gateway(server.url, redis_prefix, chat_data.parent, runs_root)
    store = RunStore.from_url(server.url, redis_prefix)
    try:
        iters = 30
        run_id = _start(trainer, _spec(chat_data, iters=iters, save_every=4))
        wait_for(lambda: store.get_run(run_id).progress.get("step", 0) >= 5, 120, 0.1, "a checkpoint")
        child = trainer.core.processes.get(run_id).process
        server.process.kill()
        killed = time.monotonic()
        # The watchdog: no heartbeat for the TTL, so the run's process is stopped (it would race a resume).
        wait_for(lambda: not child.is_alive(), 30, 0.05, "the watchdog to stop the run process")
        stopped = time.monotonic() - killed
        assert stopped >= 2.0 and _steps_on_disk(runs_root, run_id) < iters
        server = start_redis(tmp_path / "redis", port=server.port)
        _durable(server.url)
        wait_for(lambda: store.get_run(run_id).attempt == 2, 120, 0.1, "the resume")
        resumed = time.monotonic() - killed
        wait_for(lambda: store.status_of(run_id) == "SUCCEEDED", 180, 0.2, "the run to finish")
        _assert_whole(store, run_id, runs_root, iters, attempts=2)
        statuses = [e.data for e in store.read_events(run_id, count=10_000) if e.kind == "status"]
        lost = [s for s in statuses if s["status"] == "LOST"]
        assert len(lost) == 1 and (
            "lost Redis" in lost[0]["reason"] or "stopped heartbeating" in lost[0]["reason"]
        ), lost
        _report(f"Redis kill -9 longer than the TTL (run process stopped after {stopped:.1f} s)", resumed)
    finally:
        store.close()
        gateway.stop()
        trainer.stop()
        server.stop()


def test_the_event_buffer_is_bounded_and_flushes_in_order_once(tmp_path, redis_prefix):
    from services.common.records import RunRecord, TrainerRecord
    from services.trainer.run_events import EventOutbox

    server = start_redis(tmp_path / "redis")
    _durable(server.url)
    store = RunStore.from_url(server.url, redis_prefix)
    try:
        store.register_trainer(TrainerRecord(id="t1", address="127.0.0.1:1"), 30.0)
        store.create_run(RunRecord(id="r1"), claim="t1")
        store.transition("r1", "RUNNING", set_fields={"attempt": 1})
        outbox = EventOutbox(store, "r1", attempt=1, capacity=3, retry_seconds=0.0)
        outbox.put("step", {"step": 1}, {"step": 1})
        server.process.kill()
        server.process.wait()
        for step in range(2, 7):
            outbox.put("step", {"step": step}, {"step": step})
        assert [e.data["step"] for e in outbox.pending] == [4, 5, 6] and outbox.dropped == 2
        server = start_redis(tmp_path / "redis", port=server.port)
        _durable(server.url)
        assert outbox.flush() and not outbox.pending
        outbox.put("step", {"step": 7}, {"step": 7})
        assert not outbox.pending
        # A second flush of the same events (the parent writing what the child handed over) adds nothing.
        for step, seq in ((6, 6), (7, 7)):
            assert store.append_event("r1", "step", {"step": step}, attempt=1, seq=seq) == ""
        steps = [e.data["step"] for e in store.read_events("r1") if e.kind == "step"]
        assert steps == [1, 4, 5, 6, 7] and store.get_run("r1").progress["step"] == 7
    finally:
        store.close()
        server.stop()


# ---- a trainer SIGKILLed ------------------------------------------------------------------------------


def _trainer_process(redis_url, prefix, chat_data, runs_root, trainer_id, log: Path, prlimit_as: int = 0):
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'protos'}"}
    values = {
        "redis_url": redis_url,
        "redis_prefix": prefix,
        "trainer_port": 0,
        "trainer_id": trainer_id,
        "models_root": models_dir(),
        "data_root": chat_data.parent,
        "runs_root": runs_root,
        "heartbeat_interval": 0.5,
        "heartbeat_ttl": 2.0,
        "recovery_backoff": 0.2,
    }
    env.update({f"PEFTLAB_{k.upper()}": str(v) for k, v in values.items()})
    cap = ["prlimit", f"--as={prlimit_as}"] if prlimit_as else []
    return subprocess.Popen(
        [*cap, sys.executable, "-m", "services.trainer"],
        cwd=REPO,
        env=env,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
    )


def _submit(stub, spec: dict) -> str:
    return stub.SubmitRun(gateway_pb2.SubmitRunRequest(spec=spec_to_proto(spec)), timeout=30).run.id


def test_a_killed_trainer_loses_no_run(redis_url, redis_prefix, chat_data, tmp_path, store):
    runs_root = tmp_path / "runs"
    log = tmp_path / "trainers.log"
    gateway = start_gateway(redis_url, redis_prefix, chat_data.parent, runs_root)
    stub = gateway_pb2_grpc.GatewayStub(gateway.channel)
    processes = {"tr-a": _trainer_process(redis_url, redis_prefix, chat_data, runs_root, "tr-a", log)}
    try:
        wait_for(lambda: store.trainer_alive("tr-a"), 60, 0.1, "trainer tr-a registered")
        iters = 30
        first = _submit(stub, _spec(chat_data, iters=iters, save_every=4))
        processes["tr-b"] = _trainer_process(redis_url, redis_prefix, chat_data, runs_root, "tr-b", log)
        wait_for(lambda: store.trainer_alive("tr-b"), 60, 0.1, "trainer tr-b registered")
        wait_for(lambda: store.get_run(first).progress.get("step", 0) >= 5, 120, 0.1, "a checkpoint")
        assert store.get_run(first).trainer == "tr-a"

        # With a second trainer: tr-a dies, its registry entry expires, the run resumes on tr-b.
        processes["tr-a"].kill()
        killed = time.monotonic()
        wait_for(lambda: store.get_run(first).attempt == 2, 120, 0.1, "the resume on tr-b")
        _report("trainer SIGKILL, second trainer up", time.monotonic() - killed)
        wait_for(lambda: store.status_of(first) == "SUCCEEDED", 180, 0.2, "the run to finish")
        assert store.get_run(first).trainer == "tr-b"
        _assert_whole(store, first, runs_root, iters, attempts=2)

        # Without one: tr-b dies with a run, which resumes when tr-b comes back under its id.
        second = _submit(stub, _spec(chat_data, iters=iters, save_every=4))
        wait_for(lambda: store.get_run(second).progress.get("step", 0) >= 5, 120, 0.1, "a checkpoint")
        processes["tr-b"].kill()
        killed = time.monotonic()
        processes["tr-b"].wait(10)
        processes["tr-b"] = _trainer_process(redis_url, redis_prefix, chat_data, runs_root, "tr-b", log)
        wait_for(lambda: store.get_run(second).attempt == 2, 120, 0.1, "the resume on the restarted tr-b")
        _report("trainer SIGKILL, no second trainer (restarted)", time.monotonic() - killed)
        wait_for(lambda: store.status_of(second) == "SUCCEEDED", 180, 0.2, "the run to finish")
        _assert_whole(store, second, runs_root, iters, attempts=2)
    finally:
        for process in processes.values():
            process.kill()
            process.wait(10)
        gateway.stop()


# ---- the run dir's disk -------------------------------------------------------------------------------


@pytest.fixture
def tmpfs():
    """mount(path, size, read_only): a tmpfs the test fills or makes read-only; unmounted afterwards."""
    mounted: list[Path] = []

    def mount(path: Path, size: str = "16m", read_only: bool = False) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        options = f"size={size}" + (",ro" if read_only else "")
        try:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
            )
        except FileNotFoundError:
            pytest.skip("no mount command here")
        if done.returncode:
            pytest.skip(f"mount -t tmpfs is not permitted here ({done.stderr.strip()}): needs root")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(root: Path) -> Path:
    """Fill a file system to the last byte."""
    filler = root / "filler"
    with open(filler, "wb", buffering=0) as out:
        for chunk in (b"\0" * 65536, b"\0"):
            try:
                while out.write(chunk):
                    pass
            except OSError:
                pass
    return filler


def _wait_ended(store: RunStore, run_id: str) -> str:
    return wait_for(
        lambda: (s := store.status_of(run_id)) in ("SUCCEEDED", "FAILED", "CANCELLED") and s, 180, 0.2, "end"
    )


def test_a_full_disk_fails_the_run_in_words_and_it_resumes_once_freed(
    chat_data, tmp_path, redis_url, redis_prefix, store, tmpfs
):
    runs_root = tmpfs(tmp_path / "runs", size="8m")
    trainer = start_trainer(redis_url, redis_prefix, chat_data.parent, runs_root, trainer_id="tr-full")
    try:
        filler = _fill(runs_root)
        run_id = _start(trainer, _spec(chat_data, iters=8, save_every=4))
        assert _wait_ended(store, run_id) == "FAILED"
        error = store.get_run(run_id).error
        assert error["code"] == "RESOURCE_EXHAUSTED", error
        assert error["message"].startswith(f"disk full writing {runs_root / run_id}"), error
        assert f"free on {runs_root}" in error["message"] and "ResumeRun" in error["message"]
        print(f"\nfault: disk full -> {error['code']}: {error['message']}")
        filler.unlink()
        freed = time.monotonic()
        _resume(trainer, run_id)
        assert _wait_ended(store, run_id) == "SUCCEEDED"
        _report("disk full (tmpfs), freed, ResumeRun", time.monotonic() - freed)
        record = store.get_run(run_id)
        assert record.metrics["steps"] == 8 and store.trainer_slot_runs("tr-full") == set()
    finally:
        trainer.stop()


def test_an_mlx_write_to_a_full_disk_is_named(tmp_path, tmpfs):
    import mlx.core as mx

    from services.trainer import storage

    root = tmpfs(tmp_path / "small", size="1m")
    path = root / "weights.safetensors"
    with pytest.raises(RuntimeError) as raised:
        mx.save_safetensors(str(path), {"w": mx.zeros((1024, 1024))})
    assert "[write] Unable to write" in str(raised.value)  # MLX says no more than this
    explained = storage.explain(raised.value, root)
    assert isinstance(explained, ResourceExhausted)
    assert explained.message.startswith(f"disk full writing {root}: 0 MiB of 1 MiB free on {root}")


def test_a_read_only_run_dir_fails_the_run_in_words(
    chat_data, tmp_path, redis_url, redis_prefix, store, tmpfs
):
    # A read-only runs root: the trainer does not start, and says why.
    read_only = tmpfs(tmp_path / "runs-ro", read_only=True)
    with pytest.raises(FailedPrecondition) as refused:
        start_trainer(redis_url, redis_prefix, chat_data.parent, read_only, trainer_id="tr-ro")
    assert refused.value.message.startswith(f"runs root not writable: {read_only} (Read-only file system)")

    # A read-only run dir: the run is refused before its process starts, nothing half-written.
    runs_root = tmp_path / "runs"
    trainer = start_trainer(redis_url, redis_prefix, chat_data.parent, runs_root, trainer_id="tr-rw")
    try:
        run_dir = tmpfs(runs_root / "r-ro-start", read_only=True)
        with pytest.raises(grpc.RpcError) as failed:
            _start(trainer, _spec(chat_data, iters=4), run_id="r-ro-start")
        assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert failed.value.details().startswith(f"run dir not writable: {run_dir} (Read-only file system)")
        assert store.get_run("r-ro-start").error["code"] == "FAILED_PRECONDITION"
        assert store.trainer_slot_runs("tr-rw") == set() and not trainer.core.processes.running()

        # A run whose checkpoints dir is read-only: the first checkpoint fails; made writable, the run
        # finishes with ResumeRun.
        checkpoints = tmpfs(runs_root / "r-ro-mid" / "checkpoints", read_only=True)
        _start(trainer, _spec(chat_data, iters=6, save_every=3), run_id="r-ro-mid")
        assert _wait_ended(store, "r-ro-mid") == "FAILED"
        error = store.get_run("r-ro-mid").error
        assert error["code"] == "FAILED_PRECONDITION", error
        assert error["message"].startswith(f"run dir not writable: {checkpoints}"), error
        print(f"\nfault: read-only run dir -> {error['code']}: {error['message']}")
        subprocess.run(["umount", str(checkpoints)], check=True)
        fixed = time.monotonic()
        _resume(trainer, "r-ro-mid")
        assert _wait_ended(store, "r-ro-mid") == "SUCCEEDED"
        _report("read-only run dir, made writable, ResumeRun", time.monotonic() - fixed)
        assert store.get_run("r-ro-mid").metrics["steps"] == 6
    finally:
        trainer.stop()


# ---- memory --------------------------------------------------------------------------------------------


def _engine_vms() -> int:
    code = (
        "import psutil, services.trainer.jobs, services.trainer.engine.api; "
        "print(psutil.Process().memory_info().vms)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return int(out.stdout)


def test_a_trainer_under_an_address_space_cap_halves_the_micro_batch(
    redis_url, redis_prefix, chat_data, tmp_path, store
):
    # As tests/test_trainer_recovery.py measured: micro-batch 16 of 256-token rows needs ~2.1 GB of address
    # space above the engine's start, 8 needs ~1.5 GB. The cap here is on the trainer (prlimit), inherited.
    cap = _engine_vms() + 1800 * 2**20
    runs_root = tmp_path / "runs"
    process = _trainer_process(
        redis_url, redis_prefix, chat_data, runs_root, "tr-cap", tmp_path / "trainer.log", prlimit_as=cap
    )
    try:
        wait_for(lambda: store.trainer_alive("tr-cap"), 60, 0.1, "the capped trainer registered")
        gateway = start_gateway(redis_url, redis_prefix, chat_data.parent, runs_root)
        try:
            stub = gateway_pb2_grpc.GatewayStub(gateway.channel)
            spec = _spec(chat_data, iters=2, batch_size=16, max_seq_length=256, save_every=0)
            run_id = _submit(stub, spec)
            started = time.monotonic()
            assert _wait_ended(store, run_id) == "SUCCEEDED", store.get_run(run_id).error
        finally:
            gateway.stop()
        statuses = [e.data for e in store.read_events(run_id, count=10_000) if e.kind == "status"]
        resumed = [s["reason"] for s in statuses if s["status"] == "RESUMING"]
        assert len(resumed) == 1 and "out of memory" in resumed[0], resumed
        assert "micro-batch 8 x accumulation 2" in resumed[0]
        record = store.get_run(run_id)
        assert (record.metrics["batch_size"], record.metrics["grad_accumulation"]) == (8, 2)
        _report("address-space cap (prlimit) on the trainer, micro-batch halved", time.monotonic() - started)
    finally:
        process.kill()
        process.wait(10)


# ---- Redis with a password -----------------------------------------------------------------------------


def test_the_services_work_with_a_password_protected_redis(chat_data, tmp_path, redis_prefix):
    server = start_redis(tmp_path / "redis", password="s3cret/pw")
    assert ":s3cret%2Fpw@" in server.url
    runs_root = tmp_path / "runs"
    trainer = start_trainer(server.url, redis_prefix, chat_data.parent, runs_root, trainer_id="tr-pw")
    gateway = start_gateway(server.url, redis_prefix, chat_data.parent, runs_root)
    store = RunStore.from_url(server.url, redis_prefix)
    try:
        stub = gateway_pb2_grpc.GatewayStub(gateway.channel)
        run_id = _submit(stub, _spec(chat_data, iters=2, save_every=0))
        assert _wait_ended(store, run_id) == "SUCCEEDED"
        trainers = stub.ListTrainers(gateway_pb2.ListTrainersRequest(), timeout=10).trainers
        assert [t.id for t in trainers] == ["tr-pw"]
        # A wrong password, or none, is refused in words, with the password masked.
        for url in (server.url.replace("s3cret%2Fpw", "wrong"), f"redis://127.0.0.1:{server.port}/0"):
            with pytest.raises(RedisRefused) as refused:
                RunStore.from_url(url, redis_prefix)
            message = str(refused.value)
            assert "wrong" not in message and "PEFTLAB_REDIS_URL" in message, message
            assert f"127.0.0.1:{server.port}" in message
        with pytest.raises(RedisRefused):
            start_gateway(
                f"redis://:nope@127.0.0.1:{server.port}/0", redis_prefix, chat_data.parent, runs_root
            )
    except grpc.RpcError as exc:
        pytest.fail(f"{exc.code()}: {exc.details()}")
    finally:
        store.close()
        gateway.stop()
        trainer.stop()
        server.stop()
