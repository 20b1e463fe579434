"""The shared part of driving an experiment: what a driver needs from the comparator that holds it (a narrow
protocol, so drivers depend on no class), and the steps every kind of experiment takes (record an update,
finish, submit or find again a run, watch a time budget, notice a cancel)."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from services.common.identity import Principal
from services.common.records import now_ms
from services.common.redis_store import RunStore
from services.common.spec import RunSpec

from .backends.local import LocalRunner
from .requests import Objective
from .state import ExperimentRecord, ExperimentStore, TrialRecord

log = logging.getLogger(__name__)


# ---- what the core needs from outside (implemented over gRPC in clients.py) ---------------------------------


class RunSubmitter(Protocol):
    def submit(
        self,
        spec: RunSpec,
        name: str,
        placement: dict[str, Any],
        labels: dict[str, str],
        experiment_id: str,
        principal: Principal,
    ) -> str:
        """Submit a run through the gateway for `principal` (the user who started the experiment); its id.
        ServiceError when refused (Unavailable: try later)."""

    def cancel(self, run_id: str, reason: str, principal: Principal) -> None: ...


class Suggester(Protocol):
    def suggest(
        self,
        space: dict[str, Any],
        trials: list[TrialRecord],
        n: int,
        seed: int,
        objectives: list[Objective],
    ) -> list[tuple[dict[str, Any], str]]:
        """Up to n new configurations [(params, source)], distinct from every trial sent."""


class DriverContext(Protocol):
    """What a driver uses of the comparator that drives it."""

    store: ExperimentStore
    runs: RunStore
    owner: str
    submitter: RunSubmitter
    suggester: Suggester
    local: LocalRunner

    def cancel_runs(self, experiment_id: str, reason: str) -> None:
        """Stop the experiment's queued and running runs (finished ones are kept)."""

    def write_report_quietly(self, experiment_id: str) -> None:
        """Write the report files; a failure is logged, never raised."""


class Driver:
    """One experiment's step function; all state in Redis, so any comparator can take the next step."""

    kind = ""

    def __init__(self, context: DriverContext, record: ExperimentRecord):
        self.c = context
        self.id = record.id
        self.name = record.name
        self.store = context.store
        self.runs = context.runs
        self.owner = context.owner
        self.principal = record.principal

    def tick(self) -> bool:
        raise NotImplementedError

    def update(self, **kwargs: Any) -> str:
        return self.store.update(self.id, owner=self.owner, only_from=["RUNNING"], **kwargs)

    def finish(self, status: str, error: dict[str, str] | None = None, reason: str = "") -> None:
        fields: dict[str, Any] = {"finished_at": str(now_ms())}
        if error:
            fields["error"] = error
        self.update(to=status, set_fields=fields, reason=reason)
        log.info("experiment ended", extra={"experiment_id": self.id, "status": status})
        self.c.write_report_quietly(self.id)

    def submit(self, spec: RunSpec, name: str, placement: dict[str, Any], labels: dict[str, str]) -> str:
        return self.c.submitter.submit(spec, name, placement, labels, self.id, self.principal)

    def adopt(self, labels: dict[str, str]) -> str:
        """A run already submitted for these labels (the comparator died before recording it), or ""."""
        token = ""
        while True:
            records, token = self.runs.list_runs(page_size=200, page_token=token, experiment_id=self.id)
            for record in records:
                if all(record.labels.get(k) == v for k, v in labels.items()):
                    return record.id
            if not token:
                return ""

    def over_budget(self, record: Any, budget: float) -> bool:
        """Training time (from its step events: load, the first evaluation and test scoring do not count, as
        in the PyTorch backend) past the budget while steps remain."""
        progress = record.progress
        return bool(
            budget
            and record.status == "RUNNING"
            and progress.get("elapsed_seconds", 0.0) > budget
            and progress.get("step", 0) < progress.get("total_steps", 0)
        )

    def stopped(self) -> bool:
        """True (and the runs cancelled) when the experiment was cancelled or ended elsewhere."""
        status = self.store.status_of(self.id)
        if status == "CANCELLED":
            self.c.cancel_runs(self.id, "experiment cancelled")
        return status != "RUNNING"
