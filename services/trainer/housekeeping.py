"""The trainer's bookkeeping of its slots against Redis, on every heartbeat and at start: runs a previous life of
this trainer id left behind, runs that moved on elsewhere but still have a process here, placements that never
arrived, and the hard stop when the heartbeat lease ran out."""

from __future__ import annotations

import logging
import threading

from services.common.errors import ServiceError
from services.common.logs import run_context
from services.common.records import now_ms
from services.common.redis_store import RunStore, TransitionRefused
from services.common.status_machine import ACTIVE
from services.trainer.jobs import RunProcesses

log = logging.getLogger(__name__)

STALE_PLACEMENT_MS = 30_000


class SlotHousekeeping:
    def __init__(
        self,
        trainer_id: str,
        store: RunStore,
        processes: RunProcesses,
        admit: threading.Lock,
        cancel_grace: float,
    ):
        self.id = trainer_id
        self.store = store
        self.processes = processes
        # The trainer's admission lock: a slot is judged free or stale only while no StartRun is admitting.
        self.admit = admit
        self.cancel_grace = cancel_grace

    def lease_lost(self, seconds: float) -> None:
        """No heartbeat for the TTL: the gateway may be resuming our runs elsewhere, into the same run dirs
        on a shared root. Their processes stop now, with no last checkpoint (it could race the resumer's
        read); each is recorded LOST once Redis answers (refused if the run moved on meanwhile)."""
        for run_id in self.processes.running():
            if self.processes.terminate(run_id, lease_lost=True):
                log.error(
                    "stopping a run: this trainer lost Redis for longer than the heartbeat TTL",
                    extra={"run_id": run_id, "seconds": round(seconds, 1)},
                )

    def on_beat(self) -> None:
        self._stop_disowned_runs()
        self._return_stale_placements()

    def reap_previous_life(self) -> None:
        """Runs that hold this trainer's slots in Redis but have no process here died with our predecessor."""
        with self.admit:
            mine = set(self.processes.running())
            for run_id in self.store.trainer_slot_runs(self.id) - mine:
                with run_context(run_id):
                    try:
                        self.store.transition(
                            run_id,
                            "LOST",
                            only_from=ACTIVE,
                            expect_trainer=self.id,
                            release=True,
                            set_fields={"previous_trainer": self.id},
                            reason=f"trainer {self.id} restarted while the run was on it",
                            error={"code": "UNAVAILABLE", "field": "", "message": "its trainer restarted"},
                        )
                        log.warning("run lost by a previous trainer process", extra={"run_id": run_id})
                    except (TransitionRefused, ServiceError):
                        self.store.release_slot(self.id, run_id)

    def _stop_disowned_runs(self) -> None:
        """A run marked LOST or CANCELLED elsewhere (e.g. while our heartbeat lapsed) must not keep running."""
        for run_id in self.processes.running():
            try:
                record = self.store.get_run(run_id)
            except ServiceError:
                continue
            job = self.processes.get(run_id)
            if job and (
                record.status not in ACTIVE
                or record.trainer != self.id
                or record.attempt != job.child.attempt
            ):
                log.warning("run changed status elsewhere; stopping its process", extra={"run_id": run_id})
                self.processes.stop(run_id, self.cancel_grace)

    def _return_stale_placements(self) -> None:
        """A run booked on this trainer that never arrived (its gateway died between booking and calling us)
        goes back to the queue."""
        cutoff = now_ms() - STALE_PLACEMENT_MS
        with self.admit:
            local = set(self.processes.running())
            for record in self.store.get_runs(sorted(self.store.trainer_slot_runs(self.id) - local)):
                if (
                    record.status not in ("PLACED", "RESUMING")
                    or record.trainer != self.id
                    or record.updated_at > cutoff
                ):
                    continue
                try:
                    self.store.transition(
                        record.id,
                        "QUEUED" if record.status == "PLACED" else "RESUMING",
                        only_from=[record.status],
                        expect_trainer=self.id,
                        release=True,
                        queue="add",
                        set_fields={"trainer": ""},
                        reason=f"placed on trainer {self.id} but never started there; back in the queue",
                    )
                except ServiceError:
                    pass
