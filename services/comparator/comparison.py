"""A comparison's driver: each arm x seed is one run (MLX runs through the gateway, PyTorch runs here, after
the MLX ones), watched to its end against the time budget."""

from __future__ import annotations

import logging
from typing import Any

from services.common.errors import ServiceError, Unavailable
from services.common.spec import RunSpec
from services.common.status_machine import TERMINAL as RUN_TERMINAL

from .driving import Driver, DriverContext
from .requests import ComparisonRequest
from .state import Cell, ExperimentRecord

log = logging.getLogger(__name__)


class ComparisonDriver(Driver):
    kind = "comparison"

    def __init__(self, context: DriverContext, record: ExperimentRecord):
        super().__init__(context, record)
        self.request = ComparisonRequest.from_dict(record.request)
        self.arms = {arm.name: arm for arm in self.request.arms}

    def spec_of(self, cell: Cell) -> RunSpec:
        return self.request.spec_of(self.arms[cell.arm], cell.seed)

    def tick(self) -> bool:
        if self.stopped():
            return False
        cells = list(self.store.cells(self.id).values())
        for cell in cells:
            if cell.backend == "mlx":
                self._step_mlx(cell)
        mlx_active = any(c.backend == "mlx" and c.state != "DONE" for c in cells)
        for cell in cells:
            if cell.backend == "torch":
                self._step_local(cell, start_allowed=not mlx_active)
        cells = list(self.store.cells(self.id).values())
        if all(c.state == "DONE" for c in cells):
            good = [
                c
                for c in cells
                if c.run_status == "SUCCEEDED" or (c.budget_stopped and c.run_status == "CANCELLED")
            ]
            if good:
                self.finish("SUCCEEDED", reason=f"{len(good)} of {len(cells)} runs produced metrics")
            else:
                first = next((c.error for c in cells if c.error), None) or {}
                message = f"every run failed; the first error: {first.get('message', 'unknown')}"
                self.finish(
                    "FAILED", {"code": first.get("code", "INTERNAL"), "field": "", "message": message}
                )
            return False
        return True

    def _label(self, cell: Cell) -> str:
        return f"arm {cell.arm} seed {cell.seed}"

    def _step_mlx(self, cell: Cell) -> None:
        if cell.state == "PENDING":
            labels = {"experiment": self.id, "arm": cell.arm, "seed": str(cell.seed)}
            try:
                run_id = self.adopt(labels) or self.submit(
                    self.spec_of(cell),
                    f"{self.name or self.id} {cell.arm} seed {cell.seed}",
                    self.request.placement,
                    labels,
                )
            except Unavailable as exc:
                log.warning(
                    "gateway unavailable; retrying", extra={"experiment_id": self.id, "error": str(exc)}
                )
                return
            except ServiceError as exc:
                cell.state, cell.run_status = "DONE", "FAILED"
                cell.error = {"code": exc.code, "field": exc.field, "message": exc.message}
                self.update(
                    members=[("cells", cell.key, cell)],
                    events=[("log", {"message": f"{self._label(cell)} was refused: {exc}"})],
                )
                return
            cell.state, cell.run_id = "SUBMITTED", run_id
            self.update(
                members=[("cells", cell.key, cell)],
                runs=[run_id],
                events=[("run_submitted", {"run_id": run_id})],
            )
            return
        if cell.state != "SUBMITTED":
            return
        record = self.runs.get_run(cell.run_id)
        if record.status not in RUN_TERMINAL:
            if not cell.budget_stopped and self.over_budget(record, self.request.time_budget_seconds):
                cell.budget_stopped = True
                self.update(
                    members=[("cells", cell.key, cell)],
                    events=[
                        ("log", {"message": f"{self._label(cell)} reached the time budget; stopping it"})
                    ],
                )
                self.c.submitter.cancel(cell.run_id, "time budget of the comparison", self.principal)
            return
        cell.state, cell.run_status, cell.error = "DONE", record.status, record.error
        if record.status == "CANCELLED" and not cell.budget_stopped:
            cell.error = {"code": "CANCELLED", "field": "", "message": "the run was cancelled"}
        events: list[tuple[str, dict]] = [("run_finished", {"run_id": cell.run_id, "status": record.status})]
        if record.status == "FAILED":
            message = (record.error or {}).get("message", "")
            events.append(("log", {"message": f"{self._label(cell)} failed: {message}"}))
        self.update(members=[("cells", cell.key, cell)], events=events)

    def _step_local(self, cell: Cell, start_allowed: bool) -> None:
        local = self.c.local
        if cell.state == "PENDING":
            available, why = local.available()
            if not available:
                cell.state, cell.run_status = "DONE", "FAILED"
                cell.error = {
                    "code": "FAILED_PRECONDITION",
                    "field": f"arms[{cell.arm}].backend",
                    "message": f"the PyTorch backend is not installed here ({why}); "
                    "install the extra: pip install 'peftlab[torch]'",
                }
                self.update(
                    members=[("cells", cell.key, cell)],
                    events=[("log", {"message": f"{self._label(cell)}: {cell.error['message']}"})],
                )
                return
            if not start_allowed or not local.free():
                return
            run = local.start(self.id, self.spec_of(cell), self.request.time_budget_seconds)
            cell.state, cell.run_id = "SUBMITTED", run.id
            self.update(
                members=[("cells", cell.key, cell), ("local", run.id, run)],
                runs=[run.id],
                events=[("run_submitted", {"run_id": run.id, "backend": "torch"})],
            )
            return
        if cell.state != "SUBMITTED":
            return
        run = self.store.local_runs(self.id).get(cell.run_id)
        if run is None:
            return
        polled = local.poll(run)
        if polled.status == run.status and polled.status not in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return
        members: list[tuple[str, str, Any]] = [("local", polled.id, polled)]
        events: list[tuple[str, dict]] = []
        if polled.status in ("SUCCEEDED", "FAILED", "CANCELLED"):
            cell.state, cell.run_status, cell.error = "DONE", polled.status, polled.error
            cell.budget_stopped = bool(polled.metrics and polled.metrics.get("status") == "budget_stopped")
            members.append(("cells", cell.key, cell))
            events.append(("run_finished", {"run_id": polled.id, "status": polled.status}))
            if polled.status == "FAILED":
                events.append(
                    (
                        "log",
                        {
                            "message": f"{self._label(cell)} (torch) failed: {(polled.error or {}).get('message', '')}"
                        },
                    )
                )
        self.update(members=members, events=events)
