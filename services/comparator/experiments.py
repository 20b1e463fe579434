"""The comparator's core (no gRPC): starts comparisons and studies, drives them to their end, reports on them.

Every experiment lives in Redis (state.py). A comparator drives the experiments it holds a lease on, in one
loop: each pass renews its leases and lets each experiment's driver take one step (submit what is due,
collect what ended, prune, ask the optimizer for more). The drivers keep nothing that is not in Redis, so a
comparator that is killed and restarted (or a replica, once the lease expires) continues an experiment where
it was: a configuration is recorded before its run is submitted, and a run is found again by its labels if
the comparator died between the two, so no trial is run twice and no finished trial is repeated.

Runs go through the gateway (its validation, its placement on the trainer pool from the registry, its queue);
their state is read straight from Redis. Runs of the PyTorch backend are executed by the comparator itself
(backends/local.py).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field

from services.common.errors import FailedPrecondition, NotFound, PermissionDenied, ServiceError
from services.common.identity import ANONYMOUS, Principal, may_change
from services.common.records import now_ms
from services.common.redis_store import RunStore
from services.common.status_machine import TERMINAL as RUN_TERMINAL
from services.common.validation import Roots, new_id, page_size

from .backends.local import LocalRunner
from .comparison import ComparisonDriver
from .config import ComparatorConfig
from .driving import Driver, RunSubmitter, Suggester
from .reporting import Reporter, ReportFiles
from .requests import ComparisonRequest, StudyRequest, check_comparison, check_study
from .state import (
    TERMINAL,
    Cell,
    ExperimentRecord,
    ExperimentStore,
    LeaseLost,
    StatusRefused,
    TrialRecord,
)
from .study import StudyDriver

log = logging.getLogger(__name__)


@dataclass
class ExperimentView:
    """An experiment with everything GetExperiment answers."""

    record: ExperimentRecord
    run_ids: list[str]
    finished_runs: int
    trials: list[TrialRecord] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)


class Comparator:
    def __init__(
        self,
        config: ComparatorConfig,
        store: ExperimentStore,
        runs: RunStore,
        submitter: RunSubmitter,
        suggester: Suggester,
        local: LocalRunner | None = None,
    ):
        self.config = config
        self.store = store
        self.runs = runs
        self.submitter = submitter
        self.suggester = suggester
        self.local = local or LocalRunner(
            config.experiments_root, config.models_root, config.data_root, config.local_slots
        )
        self.roots = Roots.from_paths(config.models_root, config.data_root, config.experiments_root)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._drivers: dict[str, Driver] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.reporter = Reporter(config.experiments_root, store, runs, self.local)

    # ---- lifecycle ----

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="experiments", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop driving; hand the leases back so a replica (or the restart) takes over at once. Runs on the
        trainers go on; they are collected by whoever drives the experiment next."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=30)
        for experiment_id in list(self._drivers):
            try:
                self.store.release(experiment_id, self.owner)
            except Exception:  # noqa: BLE001 - Redis may be gone at shutdown; the lease then expires
                pass
        self._drivers.clear()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.drive_once()
            except Exception:
                log.exception("experiment pass failed")
            self._wake.wait(self.config.poll_interval)
            self._wake.clear()

    def drive_once(self) -> None:
        """One pass: take over experiments nobody drives, and let each driver take a step."""
        active = self.store.active()
        for experiment_id in set(self._drivers) - set(active):
            self._drop(experiment_id)
        for experiment_id in active:
            if self._stop.is_set():
                return
            driver = self._drivers.get(experiment_id)
            if driver is None:
                if not self.store.acquire(experiment_id, self.owner, self.config.lease_seconds):
                    continue
                try:
                    driver = self._new_driver(self.store.get(experiment_id))
                except NotFound:
                    self.store.release(experiment_id, self.owner)
                    continue
                self._drivers[experiment_id] = driver
                log.info("driving experiment", extra={"experiment_id": experiment_id, "kind": driver.kind})
            elif not self.store.renew(experiment_id, self.owner, self.config.lease_seconds):
                log.warning(
                    "lease lost; another comparator drives it", extra={"experiment_id": experiment_id}
                )
                self._drivers.pop(experiment_id, None)
                continue
            try:
                going = driver.tick()
            except LeaseLost:
                self._drivers.pop(experiment_id, None)
                continue
            except (NotFound, StatusRefused):
                going = False  # deleted, or cancelled while this step ran
            except Exception:
                log.exception("experiment step failed", extra={"experiment_id": experiment_id})
                continue
            if not going:
                self._drop(experiment_id)

    def _drop(self, experiment_id: str) -> None:
        self._drivers.pop(experiment_id, None)
        self.store.release(experiment_id, self.owner)

    def _new_driver(self, record: ExperimentRecord) -> Driver:
        if record.kind == "comparison":
            return ComparisonDriver(self, record)
        return StudyDriver(self, record)

    # ---- requests ----

    def start_comparison(self, request: ComparisonRequest, principal: Principal) -> ExperimentView:
        """`principal`: the user it is for; its runs are submitted for them (never with more rights)."""
        request = check_comparison(request, self.roots)
        record = ExperimentRecord(
            id=new_id("x"),
            kind="comparison",
            name=request.name,
            request=request.to_dict(),
            total_runs=len(request.arms) * len(request.seeds),
            caller=principal.caller,
            grant=principal.grant,
        )
        cells = [
            Cell(arm=arm.name, seed=seed, backend=arm.backend)
            for arm in request.arms
            for seed in request.seeds
        ]
        self.store.create(record, [("cells", c.key, c) for c in cells])
        log.info("comparison started", extra={"experiment_id": record.id, "runs": record.total_runs})
        self._wake.set()
        return self.get(record.id)

    def start_study(self, request: StudyRequest, principal: Principal) -> ExperimentView:
        request = check_study(request, self.roots)
        # The optimizer checks the space (types, ranges, conditions) before anything is recorded.
        self.suggester.suggest(request.space, [], 1, request.seed, request.objectives)
        record = ExperimentRecord(
            id=new_id("x"),
            kind="study",
            name=request.name,
            request=request.to_dict(),
            total_runs=request.n_trials,
            caller=principal.caller,
            grant=principal.grant,
        )
        self.store.create(record)
        log.info("study started", extra={"experiment_id": record.id, "trials": request.n_trials})
        self._wake.set()
        return self.get(record.id)

    def get(self, experiment_id: str) -> ExperimentView:
        record = self.store.get(experiment_id)
        run_ids = self.store.run_ids(experiment_id)
        if record.kind == "study":
            trials = self.store.trials(experiment_id)
            finished = sum(t.status != "RUNNING" for t in trials)
            return ExperimentView(record, run_ids, finished, trials=trials)
        cells = list(self.store.cells(experiment_id).values())
        return ExperimentView(record, run_ids, sum(c.state == "DONE" for c in cells), cells=cells)

    def list(self, size: int, token: str) -> tuple[list[ExperimentView], str]:
        records, next_token = self.store.list(page_size(size), token)
        return [self.get(r.id) for r in records], next_token

    def cancel(self, experiment_id: str, caller: str = ANONYMOUS) -> ExperimentView:
        """Cancel an experiment and its runs; only the user who started it may (its runs are theirs, and
        the comparator cancels them with that user's grant, so anyone else could otherwise cancel them)."""
        record = self.store.get(experiment_id)
        if not may_change(record.caller, caller):
            raise PermissionDenied(
                f"experiment {experiment_id} belongs to user {record.caller!r}; only its owner can cancel "
                f"it (you are {caller!r})",
                "experiment_id",
            )
        if record.status in TERMINAL:
            raise FailedPrecondition(f"experiment {experiment_id} already {record.status}", "experiment_id")
        try:
            self.store.update(
                experiment_id,
                only_from=["RUNNING"],
                to="CANCELLED",
                set_fields={"finished_at": str(now_ms())},
                reason="cancel requested",
            )
        except StatusRefused as exc:
            raise FailedPrecondition(
                f"experiment {experiment_id} already {exc.current}", "experiment_id"
            ) from None
        self.cancel_runs(experiment_id, "experiment cancelled")
        self.write_report_quietly(experiment_id)
        return self.get(experiment_id)

    def cancel_runs(self, experiment_id: str, reason: str) -> None:
        """Stop the experiment's queued and running runs (finished ones are kept)."""
        principal = self.store.get(experiment_id).principal
        run_ids = self.store.run_ids(experiment_id)
        for record in self.runs.get_runs(run_ids):
            if record.status not in RUN_TERMINAL:
                try:
                    self.submitter.cancel(record.id, reason, principal)
                except ServiceError as exc:
                    log.warning("could not cancel run", extra={"run_id": record.id, "error": str(exc)})
        for run in self.store.local_runs(experiment_id).values():
            if run.status in ("QUEUED", "RUNNING"):
                self.local.cancel(run)

    # ---- reports ----

    # ---- reports ----

    def report(self, experiment_id: str, write: bool = True) -> ReportFiles:
        return self.reporter.report(self.get(experiment_id), write)

    def write_report_quietly(self, experiment_id: str) -> None:
        try:
            self.report(experiment_id)
        except Exception:
            log.exception("writing the report failed", extra={"experiment_id": experiment_id})
