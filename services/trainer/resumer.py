"""The trainer's automatic resume of a dead run process. recovery.py decides what a death means (no Redis);
the Resumer keeps each run's count of resumes, records RESUMING with the decision's reason (the event the UI
and CLI show), and has the trainer relaunch the run from its newest checkpoint after the decision's delay."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.common.redis_store import RunStore
from services.trainer.config import TrainerConfig
from services.trainer.jobs import Outcome, RunJob, RunProcesses
from services.trainer.recovery import (
    Attempts,
    Death,
    Decision,
    address_space_capped,
    decide,
    oom_kills,
)

log = logging.getLogger(__name__)


class Resumer:
    def __init__(
        self,
        trainer_id: str,
        config: TrainerConfig,
        store: RunStore,
        processes: RunProcesses,
        relaunch: Callable[[str, dict[str, Any]], None],
        closing: Callable[[], bool],
    ):
        self.id = trainer_id
        self.config = config
        self.store = store
        self.processes = processes
        self.relaunch = relaunch  # (run_id, spec overrides): admits and starts the run again
        self.closing = closing
        self.attempts: dict[str, Attempts] = {}  # automatic resumes so far, per run

    def decide(self, job: RunJob, outcome: Outcome) -> Decision:
        now, before = oom_kills(), job.oom_kills_at_start
        death = Death(
            outcome.exitcode,
            outcome.error,
            memory_capped=bool(job.child.memory_limit_bytes) or address_space_capped(),
            oom_killed=now is not None and before is not None and now > before,
        )
        spec = job.child.spec
        batch, accumulation = spec.batch_size, spec.grad_accumulation
        if not batch:  # batch_size auto: what the engine chose is in the run dir's spec.json
            batch, accumulation = _trained_batch(Path(job.child.run_dir), accumulation)
        return decide(
            death,
            batch,
            accumulation,
            self.attempts.get(job.run_id, Attempts()),
            self.config.memory_retries,
            self.config.crash_retries,
            self.config.recovery_backoff,
            job.child.workers,
        )

    def resume_later(self, job: RunJob, decision: Decision) -> bool:
        """Keep the run's slot, mark it RESUMING with the reason, and relaunch it after the decision's delay;
        False when it cannot (the trainer is closing, or the slot is gone)."""
        run_id = job.run_id
        if self.closing() or not self.processes.hold(run_id, job.child.workers):
            return False
        try:
            self.store.transition(
                run_id,
                "RESUMING",
                only_from=["RUNNING"],
                expect_trainer=self.id,
                expect_attempt=job.child.attempt,
                set_fields={
                    "trainer_resumes": decision.attempts.memory + decision.attempts.crashes,
                    "micro_batch": f"{decision.batch_size}x{decision.grad_accumulation}",
                },
                reason=decision.reason,
            )
        except BaseException:
            self.processes.release_hold(run_id)
            raise
        self.attempts[run_id] = decision.attempts
        log.warning("resuming a dead run process", extra={"reason": decision.reason})
        overrides = {"batch_size": decision.batch_size, "grad_accumulation": decision.grad_accumulation}
        timer = threading.Timer(decision.delay_seconds, self.relaunch, args=(run_id, overrides))
        timer.daemon = True
        timer.start()
        return True

    def forget(self, run_id: str) -> None:
        """The run ended: its count starts afresh if it is ever resumed by hand."""
        self.attempts.pop(run_id, None)


def failure(error: dict[str, str], decision: Decision) -> dict[str, str]:
    """The FAILED error of a run the recovery gave up on: its reason, which says what was tried."""
    if decision.memory:
        return {"code": "RESOURCE_EXHAUSTED", "field": "spec.batch_size", "message": decision.reason}
    if decision.attempts.crashes or "killed" in decision.reason:
        return {**error, "message": decision.reason}
    return error


def _trained_batch(run_dir: Path, accumulation: int) -> tuple[int, int]:
    try:
        saved = json.loads((run_dir / "spec.json").read_text())
        return int(saved["batch_size"]), int(saved["grad_accumulation"])
    except (OSError, ValueError, KeyError):
        return 0, accumulation  # died before the engine chose: nothing to halve
