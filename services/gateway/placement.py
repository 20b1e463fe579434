"""Placing runs on trainers: which trainer a run should go to (`choose_trainer`, pure), and the placer loop
that takes queued runs to trainers with a free slot, notices trainers whose heartbeat expired (their runs
become LOST) and queues lost runs to resume from their checkpoints.

Slot booking is a Lua script (RunStore.transition with claim=...), so several gateways can place at once
without ever putting two runs in one slot. The placer wakes on every status change (the `events` stream:
a finished run frees a slot) and at least every `interval` seconds (a trainer may have joined).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from services.common.errors import ServiceError
from services.common.logs import run_context
from services.common.records import RunRecord, TrainerRecord, now_ms
from services.common.redis_store import RunStore, TrainerGone, TransitionRefused

log = logging.getLogger(__name__)

DEVICES = ("", "cpu", "gpu", "apple", "cuda")
SUSPECT_SECONDS = 5.0


def device_matches(trainer: TrainerRecord, device: str) -> bool:
    kind = trainer.hardware.get("device_kind", "")
    return not device or kind == device or (device == "gpu" and kind in ("apple", "cuda"))


def can_hold_checkpoint(trainer: TrainerRecord, run: RunRecord) -> bool:
    """A resume needs the run's checkpoint: only trainers that see the runs root holding the run dir qualify.

    Runs roots are told apart by the id file at their top (services/common/runs_root.py), since per-machine
    roots at one path look alike; records from before the ids compare the path.
    """
    if not run.run_dir:
        return True
    if run.runs_root_id and trainer.runs_root_id:
        return run.runs_root_id == trainer.runs_root_id
    root = trainer.runs_root.rstrip("/")
    return not root or run.run_dir.startswith(root + "/")


def waiting_reason(run: RunRecord, trainers: Iterable[TrainerRecord]) -> str:
    """Why a run waiting to resume is not placed, when the reason is that no live trainer sees its run dir;
    or that a data-parallel run needs more slots than any live trainer has;
    "" otherwise (it is placed, or it only waits for a free slot)."""
    if run.status not in ("QUEUED", "RESUMING") or run.trainer:
        return ""
    trainers = list(trainers)
    workers = workers_of(run)
    if workers > 1 and trainers and workers > max(t.slots for t in trainers):
        return (
            f"waiting for a trainer with {workers} slots (workers={workers}: its ranks share one trainer); the "
            f"largest registered has {max(t.slots for t in trainers)} (peftlab trainer join --slots {workers})"
        )
    if run.status != "RESUMING" or not run.run_dir:
        return ""
    if any(can_hold_checkpoint(t, run) for t in trainers):
        return ""
    owner = f"trainer {run.previous_trainer}" if run.previous_trainer else "the trainer that ran it"
    return (
        f"waiting for {owner} (its runs root is not shared): the run resumes from its checkpoint in "
        f"{run.run_dir} once a trainer that sees that runs root joins"
    )


def workers_of(run: RunRecord) -> int:
    """Slots the run books: one per data-parallel worker."""
    try:
        return max(1, int(run.spec.get("workers", 1) or 1))
    except (TypeError, ValueError):
        return 1


def choose_trainer(trainers: Iterable[TrainerRecord], run: RunRecord) -> TrainerRecord | None:
    """The best trainer with a free slot for `run`, or None (it waits in the queue).

    Order: the pinned trainer, a matching device (`placement.device`), for a resume the trainer it ran on,
    enough available memory for `spec.memory_budget_gb`, then the most free slots and the fewest runs
    (spreading runs over trainers). With `placement.strict` a mismatch excludes a trainer instead.
    """
    placement = run.placement or {}
    device, pinned, strict = (
        placement.get("device", ""),
        placement.get("trainer_id", ""),
        placement.get("strict", False),
    )
    resuming = run.status == "RESUMING"
    budget = float(run.spec.get("memory_budget_gb", 0.0) or 0.0) * 1e9
    # A data-parallel run needs all its workers' slots on one trainer (the status machine books them at once).
    candidates = [t for t in trainers if t.free_slots >= workers_of(run)]
    if strict:
        candidates = [t for t in candidates if device_matches(t, device) and (not pinned or t.id == pinned)]
    if resuming:
        candidates = [t for t in candidates if can_hold_checkpoint(t, run)]
    if not candidates:
        return None

    def rank(t: TrainerRecord) -> tuple:
        fits = not budget or t.hardware.get("available_memory_bytes", 0) >= budget
        return (
            bool(pinned) and t.id != pinned,
            not device_matches(t, device),
            resuming and t.id != run.previous_trainer,
            not fits,
            -t.free_slots,
            len(t.run_ids),
            t.id,
        )

    return min(candidates, key=rank)


@dataclass
class DispatchError(Exception):
    """A trainer did not take a placed run. `retry`: it may later (unreachable, full); else it refused it."""

    code: str
    message: str
    retry: bool
    field: str = ""


class Placer:
    def __init__(
        self,
        store: RunStore,
        dispatch: Callable[[RunRecord, TrainerRecord], None],
        interval: float = 1.0,
        auto_resume: bool = True,
        max_auto_resumes: int = 3,
    ):
        self.store = store
        self.dispatch = dispatch
        self.interval = interval
        self.auto_resume = auto_resume
        self.max_auto_resumes = max_auto_resumes
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._suspect: dict[str, float] = {}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="placer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=self.interval + 5)

    def _loop(self) -> None:
        cursor = self.store.latest_status_change()
        while not self._stop.is_set():
            try:
                self.tick()
                cursor, _ = self.store.status_changes(cursor, int(self.interval * 1000))
            except Exception:
                log.exception("placement pass failed")
                self._stop.wait(self.interval)

    def tick(self) -> None:
        """One pass: reap lost trainers, queue lost runs for resume, place queued runs."""
        with self._lock:
            self.reap()
            self._place()

    def place_now(self, timeout: float = 10.0) -> None:
        """A placement pass from a request thread (SubmitRun, ResumeRun), so a free trainer starts the run at once."""
        if self._lock.acquire(timeout=timeout):
            try:
                self._place()
            finally:
                self._lock.release()

    # ---- reaping ----

    def reap(self) -> None:
        alive = {t.id for t in self.store.list_trainers()}
        for status in ("PLACED", "RUNNING", "RESUMING"):
            for record in self.store.get_runs(self.store.runs_in(status)):
                if record.trainer and record.trainer not in alive:
                    self._mark_lost(record, alive)
        for trainer_id in set(self.store.trainer_ids()) - alive:
            self.store.forget_trainer(trainer_id)
            log.info("trainer left the registry", extra={"trainer_id": trainer_id})
        for record in self.store.get_runs(self.store.runs_in("LOST")):
            self._requeue_lost(record)

    def _mark_lost(self, record: RunRecord, alive: set[str]) -> None:
        with run_context(record.id):
            try:
                self.store.transition(
                    record.id,
                    "LOST",
                    only_from=[record.status],
                    expect_trainer=record.trainer,
                    release=True,
                    set_fields={"previous_trainer": record.trainer},
                    reason=f"trainer {record.trainer} stopped heartbeating",
                    error={
                        "code": "UNAVAILABLE",
                        "field": "",
                        "message": f"trainer {record.trainer} stopped heartbeating",
                    },
                )
                log.warning("run lost with its trainer", extra={"trainer_id": record.trainer})
            except ServiceError:
                pass  # it moved on meanwhile

    def _requeue_lost(self, record: RunRecord) -> None:
        if not self.auto_resume:
            return
        with run_context(record.id):
            try:
                if record.auto_resumes >= self.max_auto_resumes:
                    self.store.transition(
                        record.id,
                        "FAILED",
                        only_from=["LOST"],
                        set_fields={"finished_at": now_ms()},
                        error={
                            "code": "UNAVAILABLE",
                            "field": "",
                            "message": f"lost {record.auto_resumes + 1} times",
                        },
                        reason="lost too often; not resumed again",
                    )
                    return
                queued = dataclasses.replace(record, status="RESUMING", trainer="")
                waiting = waiting_reason(queued, self.store.list_trainers())
                self.store.transition(
                    record.id,
                    "RESUMING",
                    only_from=["LOST"],
                    queue="add",
                    set_fields={"trainer": "", "auto_resumes": record.auto_resumes + 1},
                    reason="queued to resume from its newest checkpoint"
                    + (f"; {waiting}" if waiting else ""),
                )
                log.info("lost run queued to resume")
            except ServiceError:
                pass

    # ---- placing ----

    def _place(self) -> None:
        queued = self.store.queued()
        if not queued:
            return
        now = time.monotonic()
        self._suspect = {t: until for t, until in self._suspect.items() if until > now}
        trainers = [t for t in self.store.list_trainers() if t.id not in self._suspect]
        for record in self.store.get_runs(queued):
            trainers = [t for t in trainers if t.id not in self._suspect]
            if not any(t.free_slots > 0 for t in trainers):
                return
            choice = choose_trainer(trainers, record)
            if choice is not None and self._place_on(record, choice):
                choice.run_ids.append(record.id)
                choice.extra_slots += workers_of(record) - 1

    def _place_on(self, record: RunRecord, trainer: TrainerRecord) -> bool:
        status = "RESUMING" if record.status == "RESUMING" else "PLACED"
        with run_context(record.id):
            try:
                self.store.transition(
                    record.id,
                    status,
                    only_from=[record.status],
                    claim=trainer.id,
                    queue="remove",
                    set_fields={"trainer": trainer.id},
                    reason=f"placed on trainer {trainer.id}",
                )
            except (TransitionRefused, TrainerGone):
                return False  # someone else placed or cancelled it, or the trainer just left
            except ServiceError:  # no slot after all (another gateway was quicker): full for this pass
                trainer.slots = trainer.busy_slots
                return False
            placed = self.store.get_run(record.id)
            try:
                self.dispatch(placed, trainer)
                log.info("run started on trainer", extra={"trainer_id": trainer.id})
                return True
            except DispatchError as exc:
                self._undo(placed, trainer, exc)
                return False

    def _undo(self, record: RunRecord, trainer: TrainerRecord, exc: DispatchError) -> None:
        try:
            if exc.retry:
                self._suspect[trainer.id] = time.monotonic() + SUSPECT_SECONDS
                log.warning(
                    "trainer did not take the run; requeued",
                    extra={"trainer_id": trainer.id, "error": exc.message},
                )
                back = "RESUMING" if record.status == "RESUMING" else "QUEUED"
                self.store.transition(
                    record.id,
                    back,
                    only_from=[record.status],
                    expect_trainer=trainer.id,
                    release=True,
                    queue="add",
                    set_fields={"trainer": ""},
                    reason=f"trainer {trainer.id} unavailable ({exc.code}); back in the queue",
                )
            else:
                self.store.transition(
                    record.id,
                    "FAILED",
                    only_from=[record.status],
                    expect_trainer=trainer.id,
                    release=True,
                    set_fields={"finished_at": now_ms()},
                    error={"code": exc.code, "field": exc.field, "message": exc.message},
                    reason=f"refused by trainer {trainer.id}",
                )
        except ServiceError:
            pass  # the trainer already recorded the outcome (e.g. it failed the run itself)
