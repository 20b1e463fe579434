"""The trainer's core (no gRPC): starts, cancels and resumes runs in child processes, keeps their status in
Redis, registers this trainer with a heartbeat, and serves Evaluate / Generate from child processes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

from services.common.config import peftlab_version
from services.common.errors import (
    FailedPrecondition,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from services.common.logs import run_context
from services.common.records import RunRecord, TrainerRecord, now_ms
from services.common.redis_store import RunStore, TransitionRefused
from services.common.runs_root import runs_root_id
from services.common.spec import RunSpec
from services.common.status_machine import ACTIVE, RESUMABLE, TERMINAL
from services.common.validation import (
    Roots,
    check_evaluation,
    check_generation,
    check_id,
    check_labels,
    check_name,
    check_spec,
    model_dir,
    new_id,
    parse_spec,
)
from services.trainer import storage
from services.trainer.config import TrainerConfig
from services.trainer.housekeeping import SlotHousekeeping
from services.trainer.jobs import Outcome, RunChild, RunJob, RunProcesses, stream_from_child
from services.trainer.registry import Identity, Registration
from services.trainer.resumer import Resumer, failure
from services.trainer.run_events import write_pending

log = logging.getLogger(__name__)

# How long a finished run's outcome is retried while Redis is away. Past that the run is left to the gateway,
# which takes it for LOST only if this trainer's heartbeat also lapsed.
OUTCOME_RETRY_SECONDS = 600.0


class Trainer:
    def __init__(self, config: TrainerConfig, store: RunStore, identity: Identity):
        self.config = config
        self.store = store
        self.id = identity.trainer_id
        self.device_kind = str(identity.hardware.get("device_kind", "cpu"))
        self.roots = Roots.from_paths(config.models_root, config.data_root, config.runs_root)
        self.processes = RunProcesses(config.slots, self._record_outcome)
        self._calls = threading.BoundedSemaphore(config.generate_slots)
        # Serializes admission (slot check + Redis claim + spawn) so two StartRuns never share a slot.
        self._admit = threading.Lock()
        self._closing = False
        self.resumer = Resumer(
            self.id, config, store, self.processes, self._relaunch, closing=lambda: self._closing
        )
        self.housekeeping = SlotHousekeeping(self.id, store, self.processes, self._admit, config.cancel_grace)
        record = TrainerRecord(
            id=identity.trainer_id,
            address=identity.address,
            slots=config.slots,
            hardware=identity.hardware,
            version=peftlab_version(),
            runs_root=str(self.roots.runs),
            runs_root_id=storage.writable_root_id(self.roots.runs, runs_root_id),
            started_at=now_ms(),
        )
        self.registration = Registration(
            store,
            record,
            config.heartbeat_ttl,
            config.heartbeat_interval,
            identity.probe_hardware,
            on_beat=self.housekeeping.on_beat,
            on_lease_lost=self.housekeeping.lease_lost,
        )

    # ---- registry ----

    def register(self) -> None:
        """Join the registry, reap what a previous life of this trainer id left behind, start heartbeating."""
        self.registration.publish()
        self.housekeeping.reap_previous_life()
        self.registration.start_heartbeat()

    def shutdown(self) -> None:
        """SIGTERM: take no new runs (the registry says draining, so nothing is placed here), let every run
        checkpoint and record it LOST (the gateway resumes it), then leave the registry."""
        self._closing = True
        self.registration.drain()
        self.processes.stop_all(self.config.shutdown_grace)
        self.registration.leave()

    def info(self) -> TrainerRecord:
        return self.registration.info()

    # ---- runs ----

    def placed_here(self, run_id: str) -> bool:
        """The gateway placed this run here: it runs from its record, so a StartRun's copy of the spec is
        neither decoded nor checked."""
        before = self._existing(run_id) if run_id else None
        return before is not None and before.status == "PLACED" and before.trainer == self.id

    def start_run(
        self,
        spec: RunSpec | None,
        run_id: str = "",
        name: str = "",
        experiment_id: str = "",
        labels: dict | None = None,
    ) -> RunRecord:
        """Start a run: one placed here by the gateway (`spec` None: its record is checked once, against this
        machine's roots), or one a caller hands this trainer directly (`spec`, checked here)."""
        checked = None if spec is None else check_spec(spec, self.roots)
        run_id = check_id(run_id, "run_id") if run_id else new_id("r")
        check_name(name)
        labels = check_labels(labels or {})
        if experiment_id:
            check_id(experiment_id, "experiment_id")
        with run_context(run_id), self._admit:
            self._check_open()
            existing = self._existing(run_id)
            placed = existing is not None and existing.status == "PLACED" and existing.trainer == self.id
            if checked is None and not placed:
                status = existing.status if existing else "unknown"
                raise FailedPrecondition(
                    f"run {run_id} is {status}, no longer placed on trainer {self.id}; StartRun needs its spec",
                    "spec",
                )
            self._check_free_slot(_workers(existing.spec) if existing else spec.workers)
            if existing is None:
                record = RunRecord(
                    id=run_id, spec=spec.given(), name=name, experiment_id=experiment_id, labels=labels
                )
                self.store.create_run(record, claim=self.id, reason="submitted to trainer " + self.id)
            elif existing.status == "QUEUED":
                self.store.transition(
                    run_id,
                    "PLACED",
                    claim=self.id,
                    queue="remove",
                    set_fields={"trainer": self.id},
                    reason=f"taken by trainer {self.id}",
                )
            elif placed:
                # Placed here by the gateway: run what was recorded, checked on this machine.
                checked = self._recheck(existing)
            else:
                raise FailedPrecondition(
                    f"run {run_id} is {existing.status}"
                    + (f" on trainer {existing.trainer}" if existing.trainer else ""),
                    "run_id",
                )
            return self._launch(run_id, checked, "PLACED", resume=False)

    def resume_run(self, run_id: str) -> RunRecord:
        check_id(run_id, "run_id")
        with run_context(run_id), self._admit:
            self._check_open()
            record = self.store.get_run(run_id)
            self._check_free_slot(_workers(record.spec))
            if record.status == "SUCCEEDED":
                raise FailedPrecondition(f"run {run_id} already SUCCEEDED; nothing to resume", "run_id")
            if record.status == "RESUMING" and record.trainer not in ("", self.id):
                raise FailedPrecondition(
                    f"run {run_id} is being resumed on trainer {record.trainer}", "run_id"
                )
            if record.status in RESUMABLE or (record.status == "RESUMING" and not record.trainer):
                self.store.transition(
                    run_id,
                    "RESUMING",
                    only_from=[*RESUMABLE, "RESUMING"],
                    claim=self.id,
                    release=True,
                    queue="remove",
                    set_fields={
                        "trainer": self.id,
                        "previous_trainer": record.trainer or record.previous_trainer,
                    },
                    delete=["error", "finished_at"],
                    reason=f"resuming on trainer {self.id}",
                )
            elif not (record.status == "RESUMING" and record.trainer == self.id):
                raise FailedPrecondition(
                    f"run {run_id} is {record.status}; only FAILED, CANCELLED or LOST runs resume", "run_id"
                )
            checked = self._recheck(self.store.get_run(run_id), from_status="RESUMING")
            return self._launch(run_id, checked, "RESUMING", resume=True)

    def _check_open(self) -> None:
        if self._closing:
            raise Unavailable(f"trainer {self.id} is shutting down")

    def _check_free_slot(self, workers: int = 1) -> None:
        if workers > self.config.slots:
            raise FailedPrecondition(
                f"the run needs {workers} slots (workers={workers}) and trainer {self.id} has "
                f"{self.config.slots}; lower workers or start the trainer with --slots {workers}",
                "spec.workers",
            )
        if self.processes.free() < workers:
            busy = ", ".join(self.processes.running())
            raise ResourceExhausted(
                f"trainer {self.id} has {max(0, self.processes.free())} free slot(s), the run needs {workers} "
                f"({self.config.slots} in all; busy: {busy}); "
                "retry later, or submit through the gateway, which queues runs"
            )

    def _existing(self, run_id: str) -> RunRecord | None:
        try:
            return self.store.get_run(run_id)
        except ServiceError:
            return None

    def _recheck(self, record: RunRecord, from_status: str = "PLACED") -> RunSpec:
        """Check a recorded spec on this machine; a failure fails the run (it was accepted upstream)."""
        try:
            return check_spec(parse_spec(record.spec), self.roots)
        except ServiceError as exc:
            self._fail(record.id, from_status, exc)
            raise

    def _fail(self, run_id: str, from_status: str, exc: ServiceError, attempt: int | None = None) -> None:
        try:
            self.store.transition(
                run_id,
                "FAILED",
                only_from=[from_status],
                expect_trainer=self.id,
                expect_attempt=attempt,
                release=True,
                set_fields={"finished_at": now_ms()},
                error={"code": exc.code, "field": exc.field, "message": exc.message},
                reason="refused by trainer " + self.id,
            )
        except ServiceError:
            log.warning("could not record the failure", extra={"run_id": run_id})

    def _launch(
        self,
        run_id: str,
        spec: RunSpec,
        from_status: str,
        resume: bool,
        overrides: dict[str, Any] | None = None,
    ) -> RunRecord:
        record = self.store.get_run(run_id)
        run_dir = self.roots.runs / run_id
        if resume and not _has_checkpoint(run_dir):
            resume = False  # lost or cancelled before its first checkpoint: start over
        attempt = record.attempt + 1
        self.store.transition(
            run_id,
            "RUNNING",
            only_from=[from_status],
            expect_trainer=self.id,
            expect_attempt=record.attempt,
            set_fields={
                "attempt": attempt,
                "started_at": now_ms(),
                "run_dir": str(run_dir),
                "runs_root_id": self.registration.record.runs_root_id,
                "total_steps": spec.iters,
            },
            reason=("resuming from the newest checkpoint" if resume else "starting")
            + f" on trainer {self.id}",
        )
        child = RunChild(
            run_id=run_id,
            attempt=attempt,
            spec=spec.replace(**overrides) if overrides else spec,
            run_dir=str(run_dir),
            resume=resume,
            redis_url=self.config.redis_url,
            redis_prefix=self.config.redis_prefix,
            events_maxlen=self.config.events_maxlen,
            log_level=self.config.log_level,
            log_format=self.config.log_format,
            memory_limit_bytes=self.config.run_memory_limit_mb * 2**20,
            device_kind=self.device_kind,
        )
        try:
            storage.check_writable(run_dir)
            self.processes.start(child)
        except Exception as exc:
            error = (
                exc
                if isinstance(exc, ServiceError)
                else ServiceError(f"could not start the run process: {exc}")
            )
            self._fail(run_id, "RUNNING", error, attempt)
            raise error from exc
        return self.store.get_run(run_id)

    def _record_outcome(self, job: RunJob, outcome: Outcome) -> None:
        """Turn a finished child's outcome into the run's final status (runs in the job's watch thread);
        retried while Redis is unreachable, so a Redis restart does not leave the run RUNNING forever."""
        deadline = time.monotonic() + OUTCOME_RETRY_SECONDS
        attempt = 0
        while True:
            try:
                return self._write_outcome(job, outcome)
            except redis.RedisError as exc:
                if time.monotonic() > deadline:
                    break
                log.warning(
                    "Redis unreachable; retrying the run's outcome",
                    extra={"run_id": job.run_id, "error": str(exc)},
                )
                time.sleep(min(5.0, 0.25 * 2**attempt))
                attempt += 1
        log.error("the run's outcome could not be recorded", extra={"run_id": job.run_id})

    def _write_outcome(self, job: RunJob, outcome: Outcome) -> None:
        run_id = job.run_id
        # Fenced by the attempt: after a Redis outage longer than the heartbeat TTL the run may have been
        # resumed (here or elsewhere) as a newer attempt, whose record this stale outcome must not overwrite.
        common: dict[str, Any] = {
            "only_from": ["RUNNING"],
            "expect_trainer": self.id,
            "expect_attempt": job.child.attempt,
            "release": True,
        }
        with run_context(run_id):
            if outcome.disowned:
                # Someone else changed the run's status (and released the slot); leave it as it is.
                self._release_stale_slot(run_id)
                log.info("run process ended after the run was taken over elsewhere")
                return
            # What the child buffered while Redis was away goes in first, in order, once (numbered).
            write_pending(self.store, run_id, job.child.attempt, outcome.pending)
            result, error = outcome.result, outcome.error
            try:
                if result is not None and result.get("status") != "cancelled":
                    self.store.transition(
                        run_id,
                        "SUCCEEDED",
                        set_fields={"metrics": result, "finished_at": now_ms()},
                        events=[("result", result)],
                        reason="early stopped" if result.get("status") == "early_stopped" else "finished",
                        **common,
                    )
                elif job.shutting_down or job.lease_lost:
                    why = (
                        f"trainer {self.id} shut down"
                        if job.shutting_down
                        else f"trainer {self.id} lost Redis for longer than its heartbeat TTL; its run process was stopped"
                    )
                    self.store.transition(
                        run_id,
                        "LOST",
                        set_fields={"previous_trainer": self.id},
                        error={"code": "UNAVAILABLE", "field": "", "message": why},
                        reason=f"{why}; the run resumes from its checkpoint",
                        **common,
                    )
                elif result is not None or job.cancel_requested:
                    self.store.transition(
                        run_id,
                        "CANCELLED",
                        set_fields={"finished_at": now_ms()},
                        reason="cancelled; the newest checkpoint is kept",
                        **common,
                    )
                else:
                    decision = self.resumer.decide(job, outcome)
                    if decision.resume and self.resumer.resume_later(job, decision):
                        return
                    error = failure(error or outcome.crash_error(), decision)
                    self.store.transition(
                        run_id,
                        "FAILED",
                        set_fields={"finished_at": now_ms()},
                        error=error,
                        reason="run process failed",
                        **common,
                    )
                self.resumer.forget(run_id)
                log.info("run ended", extra={"exitcode": outcome.exitcode})
            except TransitionRefused as exc:
                self._release_stale_slot(run_id)
                log.warning(
                    "run outcome not recorded: status changed meanwhile",
                    extra={"current": exc.current, "attempt": job.child.attempt},
                )

    def _release_stale_slot(self, run_id: str) -> None:
        """Free the Redis slot a finished stale attempt held, unless a newer attempt of the run holds it here."""
        if run_id in self.processes.running():
            return
        record = self._existing(run_id)
        if record is None or record.trainer != self.id or record.status not in ACTIVE:
            self.store.release_slot(self.id, run_id)

    # ---- automatic resume of a dead run process (resumer.py keeps count, recovery.py decides) ----

    def _relaunch(self, run_id: str, overrides: dict[str, Any]) -> None:
        with run_context(run_id), self._admit:
            try:
                record = self.store.get_run(run_id)
                if record.status != "RESUMING" or record.trainer != self.id:
                    return  # cancelled (or taken elsewhere) while it waited
                if self._closing:
                    self.store.transition(
                        run_id,
                        "LOST",
                        only_from=["RESUMING"],
                        expect_trainer=self.id,
                        release=True,
                        set_fields={"previous_trainer": self.id},
                        reason=f"trainer {self.id} shut down before the run resumed",
                    )
                    return
                checked = self._recheck(record, from_status="RESUMING")
                self._launch(run_id, checked, "RESUMING", resume=True, overrides=overrides)
            except Exception:
                log.exception("automatic resume failed")
            finally:
                self.processes.release_hold(run_id)

    def cancel_run(self, run_id: str, reason: str = "") -> RunRecord:
        check_id(run_id, "run_id")
        check_name(reason, "reason")
        with run_context(run_id):
            record = self.store.get_run(run_id)
            if record.status in TERMINAL:
                raise FailedPrecondition(f"run {run_id} already {record.status}", "run_id")
            if self.processes.stop(run_id, self.config.cancel_grace):
                log.info("cancel requested", extra={"reason": reason})
                return self.store.get_run(run_id)
            if record.trainer and record.trainer != self.id and record.status in ACTIVE:
                raise FailedPrecondition(
                    f"run {run_id} is on trainer {record.trainer}; cancel it there or through the gateway",
                    "run_id",
                )
            # Queued, lost, or placed here but not started: nothing runs, so it is cancelled at once.
            self.store.transition(
                run_id,
                "CANCELLED",
                only_from=["QUEUED", "PLACED", "LOST", "RESUMING"],
                release=True,
                queue="remove",
                set_fields={"finished_at": now_ms()},
                reason=reason or "cancel requested",
            )
            return self.store.get_run(run_id)

    # ---- Evaluate / Generate ----

    def _finished_run_dir(self, run_id: str) -> tuple[RunRecord, Path]:
        check_id(run_id, "run_id")
        record = self.store.get_run(run_id)
        run_dir = self.roots.runs / run_id
        if record.status not in ("SUCCEEDED", "CANCELLED"):
            raise FailedPrecondition(
                f"run {run_id} is {record.status}; only SUCCEEDED or CANCELLED runs have an adapter", "run_id"
            )
        if not (run_dir / "adapter_config.json").exists() and not (run_dir / "config.json").exists():
            raise FailedPrecondition(f"run {run_id} has no saved adapter on trainer {self.id}", "run_id")
        return record, run_dir

    def evaluate(
        self, run_id: str, split: str, max_batches: int, task_samples: int, is_active: Callable[[], bool]
    ) -> dict:
        split = check_evaluation(split, max_batches, task_samples)
        _, run_dir = self._finished_run_dir(run_id)
        kwargs = {
            "run_dir": str(run_dir),
            "split": split,
            "max_batches": max_batches or -1,
            "task_samples": task_samples,
        }
        with self._call_slot():
            return next(
                iter(
                    stream_from_child(
                        "evaluate", kwargs, is_active, self.config.log_level, self.config.log_format
                    )
                )
            )

    def generate(
        self,
        prompt: str,
        run_id: str,
        model: str,
        max_tokens: int,
        temperature: float,
        is_active: Callable[[], bool],
    ) -> Iterator[str]:
        max_tokens = check_generation(prompt, max_tokens, temperature)
        adapter_dir = None
        if run_id:
            record, run_dir = self._finished_run_dir(run_id)
            base = check_spec(parse_spec(record.spec), self.roots).model
            adapter_dir = str(run_dir)
        else:
            base = str(model_dir(model, self.roots, "model"))
        kwargs = {
            "model": base,
            "prompt": prompt,
            "adapter_dir": adapter_dir,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        with self._call_slot():
            yield from stream_from_child(
                "generate", kwargs, is_active, self.config.log_level, self.config.log_format
            )

    def _call_slot(self) -> _Slot:
        if not self._calls.acquire(timeout=0):
            raise ResourceExhausted(
                f"{self.config.generate_slots} Generate/Evaluate call(s) already running on trainer {self.id}; retry shortly"
            )
        return _Slot(self._calls)


class _Slot:
    def __init__(self, semaphore: threading.BoundedSemaphore):
        self.semaphore = semaphore

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self.semaphore.release()


def _has_checkpoint(run_dir: Path) -> bool:
    if not run_dir.exists():
        return False
    from services.trainer.engine import checkpoint

    return checkpoint.latest(run_dir) is not None


def _workers(spec: dict[str, Any]) -> int:
    """Slots a run takes here: one per data-parallel worker (an invalid value is check_spec's to report)."""
    try:
        return max(1, int(spec.get("workers", 1) or 1))
    except (TypeError, ValueError):
        return 1
