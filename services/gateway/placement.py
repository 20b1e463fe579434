"""Placing runs on trainers: which trainer a run should go to (`choose_trainer`, pure), and the placer loop
that takes queued runs to trainers with a free slot and the memory of their predicted peak, notices trainers
whose heartbeat expired (their runs become LOST) and queues lost runs to resume from their checkpoints.

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
# The kinds of device whose peak-memory predictions differ (compute dtype, memory.BACKEND_FACTORS).
MEMORY_KINDS = ("cpu", "gpu")
GIB = 2**30
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


def memory_kind(trainer: TrainerRecord) -> str:
    """Which of a run's peak-memory predictions applies on this trainer: "cpu", or "gpu" (Metal, CUDA)."""
    return "cpu" if trainer.hardware.get("device_kind", "cpu") == "cpu" else "gpu"


def total_memory(trainer: TrainerRecord) -> int:
    """The trainer's memory in bytes, as its hardware reports it (0: not reported)."""
    return int(trainer.hardware.get("total_memory_bytes") or 0)


def memory_needed(run: RunRecord, trainer: TrainerRecord) -> int:
    """The run's predicted peak bytes on this trainer; 0 when nothing bounds it (no prediction in the record,
    e.g. one from before predictions were stored, or spec.allow_over_memory)."""
    if run.spec.get("allow_over_memory"):
        return 0
    return int(run.predicted_peak_bytes.get(memory_kind(trainer), 0))


def fits_memory(trainer: TrainerRecord, run: RunRecord) -> bool:
    """A trainer with less memory than the run's predicted peak never gets it (it would fail there); an unknown
    size on either side does not exclude."""
    need, have = memory_needed(run, trainer), total_memory(trainer)
    return not need or not have or need <= have


def may_wait_for_a_trainer(run: RunRecord) -> bool:
    """Whether waiting_reason can have anything to say, from the record alone: GetRun, the hottest call, reads
    the trainer registry only then."""
    if run.status not in ("QUEUED", "RESUMING") or run.trainer:
        return False
    resuming = run.status == "RESUMING" and bool(run.run_dir)
    bounded = bool(run.predicted_peak_bytes) and not run.spec.get("allow_over_memory")
    return resuming or bounded or workers_of(run) > 1


def waiting_reason(run: RunRecord, trainers: Iterable[TrainerRecord]) -> str:
    """Why a queued or resuming run is not placed, when it is more than waiting for a free slot: a
    data-parallel run needs more slots than any live trainer has; no live trainer sees the runs root holding
    its checkpoint; no live trainer has the memory of its predicted peak, or only too small ones have a free
    slot. "" otherwise (it is placed, or it only waits for a free slot)."""
    if run.status not in ("QUEUED", "RESUMING") or run.trainer:
        return ""
    trainers = list(trainers)
    workers = workers_of(run)
    if workers > 1 and trainers and workers > max(t.slots for t in trainers):
        return (
            f"waiting for a trainer with {workers} slots (workers={workers}: its ranks share one trainer); the "
            f"largest registered has {max(t.slots for t in trainers)} (peftlab trainer join --slots {workers})"
        )
    resuming = run.status == "RESUMING" and bool(run.run_dir)
    if resuming and not any(can_hold_checkpoint(t, run) for t in trainers):
        owner = f"trainer {run.previous_trainer}" if run.previous_trainer else "the trainer that ran it"
        return (
            f"waiting for {owner} (its runs root is not shared): the run resumes from its checkpoint in "
            f"{run.run_dir} once a trainer that sees that runs root joins"
        )
    return _memory_reason(
        run, [t for t in _eligible(trainers, run) if not resuming or can_hold_checkpoint(t, run)]
    )


def _memory_reason(run: RunRecord, trainers: list[TrainerRecord]) -> str:
    too_small = [t for t in trainers if not fits_memory(t, run)]
    if not too_small:
        return ""
    kinds = sorted({memory_kind(t) for t in trainers if memory_needed(run, t)})
    need = " / ".join(
        f"{run.predicted_peak_bytes[k] / GIB:.1f} GiB" + (f" on a {k} trainer" if len(kinds) > 1 else "")
        for k in kinds
    )
    if len(too_small) == len(trainers):
        largest = max(too_small, key=total_memory)
        return (
            f"waiting for a trainer with at least {need}: its predicted peak memory; the largest live one, "
            f"{largest.id}, has {total_memory(largest) / GIB:.1f} GiB (it is placed once a trainer that big "
            "joins)"
        )
    free = [t for t in trainers if t.free_slots >= workers_of(run)]
    if not free or any(fits_memory(t, run) for t in free):
        return ""  # it only waits for a free slot, or is about to be placed
    largest = max(free, key=total_memory)
    return (
        f"waiting for a free slot on a trainer with at least {need}: its predicted peak memory; the largest "
        f"free one, {largest.id}, has {total_memory(largest) / GIB:.1f} GiB"
    )


def _eligible(trainers: Iterable[TrainerRecord], run: RunRecord) -> list[TrainerRecord]:
    """The live trainers that may take new runs, narrowed by strict placement."""
    placement = run.placement or {}
    out = [t for t in trainers if not t.draining]
    if placement.get("strict"):
        device, pinned = placement.get("device", ""), placement.get("trainer_id", "")
        out = [t for t in out if device_matches(t, device) and (not pinned or t.id == pinned)]
    return out


def workers_of(run: RunRecord) -> int:
    """Slots the run books: one per data-parallel worker."""
    try:
        return max(1, int(run.spec.get("workers", 1) or 1))
    except (TypeError, ValueError):
        return 1


def choose_trainer(trainers: Iterable[TrainerRecord], run: RunRecord) -> TrainerRecord | None:
    """The best trainer with a free slot for `run`, or None (it waits in the queue).

    Only trainers with the free slots of all its workers, the memory of its predicted peak on their kind of
    device (unless `spec.allow_over_memory`; records without a prediction are not bounded) and, for a resume,
    its checkpoint's runs root. Order: the pinned trainer, a matching device (`placement.device`), for a resume
    the trainer it ran on, enough available memory for `spec.memory_budget_gb`, then the most free slots and
    the fewest runs (spreading runs over trainers). With `placement.strict` a mismatch excludes a trainer
    instead.
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
    candidates = [t for t in candidates if fits_memory(t, run)]
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
