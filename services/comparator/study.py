"""A study's driver: asks the optimizer for configurations, runs each as a trial, prunes the unpromising ones,
and ends when the budget of trials is spent (or the space has nothing untried left)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any

from services.common.errors import NotFound, ServiceError, Unavailable
from services.common.status_machine import TERMINAL as RUN_TERMINAL
from services.common.validation import overlay_spec

from . import rundata
from .driving import Driver, DriverContext
from .pruning import DEFAULT_WARMUP_TRIALS, PruningRule, judge
from .requests import StudyRequest, params_key
from .state import ExperimentRecord, TrialRecord

log = logging.getLogger(__name__)

# A study whose first trials all failed stops instead of spending its whole budget on the same error.
FAIL_FAST_TRIALS = 3
# A pruned trial's run is cancelled, and it takes a moment (up to the trainer's cancel grace, 60 s by default) to
# checkpoint and stop. The study ends once those runs have stopped, so that "SUCCEEDED" means none of its runs
# still holds a trainer; a run that has not stopped after this long does not hold the study up any more.
PRUNED_STOP_WAIT_SECONDS = 120.0


class StudyDriver(Driver):
    kind = "study"

    def __init__(self, context: DriverContext, record: ExperimentRecord):
        super().__init__(context, record)
        self.request = StudyRequest.from_dict(record.request)
        self.rule = self.request.pruning
        if self.rule.enabled and self.rule.warmup_trials == 0:
            self.rule = PruningRule(True, self.rule.min_steps, DEFAULT_WARMUP_TRIALS, self.rule.rule)
        self._curves: dict[str, list[list[float]]] = {}
        self._ending_since: float | None = None

    def _trial_event(self, trial: TrialRecord) -> tuple[str, dict]:
        return ("trial", asdict(trial))

    def tick(self) -> bool:
        if self.stopped():
            return False
        trials = self.store.trials(self.id)
        for trial in trials:
            if trial.status == "RUNNING":
                self._step_trial(trial, trials)
        trials = self.store.trials(self.id)
        running = [t for t in trials if t.status == "RUNNING"]
        done = [t for t in trials if t.status != "RUNNING"]
        if (
            len(done) >= FAIL_FAST_TRIALS
            and all(t.status == "FAILED" for t in done)
            and len(done) < self.request.n_trials
        ):
            self.c.cancel_runs(self.id, "study stopped: its first trials all failed")
            self._fail(done, f"the first {len(done)} trials all failed")
            return False
        if len(trials) >= self.request.n_trials and not running:
            return self._end(trials)
        want = min(self.request.parallelism - len(running), self.request.n_trials - len(trials))
        if want > 0:
            added = self._suggest(trials, want)
            if self.store.status_of(self.id) != "RUNNING":
                return False
            if not added and not running:
                return self._end(trials, exhausted=True)
        return True

    def _end(self, trials: list[TrialRecord], exhausted: bool = False) -> bool:
        if self._pruned_runs_stopping(trials):
            return True
        if any(t.status == "COMPLETE" for t in trials):
            reason = (
                "the search space has no untried configuration left" if exhausted else "every trial ended"
            )
            self.finish("SUCCEEDED", reason=reason)
        else:
            self._fail(trials, f"all {len(trials)} trials failed" if trials else "no configuration to try")
        return False

    def _pruned_runs_stopping(self, trials: list[TrialRecord]) -> bool:
        """Whether a pruned trial's run is still on its way to a stop (and the study should wait for it)."""
        pruned = [t.run_id for t in trials if t.status == "PRUNED" and t.run_id]
        stopping = [run_id for run_id in pruned if not self._stopped(run_id)]
        if not stopping:
            return False
        now = time.monotonic()
        self._ending_since = self._ending_since or now
        if now - self._ending_since < PRUNED_STOP_WAIT_SECONDS:
            return True
        log.warning(
            "pruned runs have not stopped; ending the study without them",
            extra={"experiment_id": self.id, "run_ids": stopping},
        )
        return False

    def _stopped(self, run_id: str) -> bool:
        try:
            return self.runs.status_of(run_id) in RUN_TERMINAL
        except NotFound:  # removed meanwhile: it holds nothing
            return True

    def _fail(self, trials: list[TrialRecord], what: str) -> None:
        errors = [t.error for t in trials if t.error]
        last = errors[-1] if errors else {}
        message = f"{what}; the last error: {last.get('message', 'unknown')}" if errors else what
        if any(t.status == "PRUNED" for t in trials) and not errors:
            message = f"{what}: every trial was pruned or failed"
        self.finish(
            "FAILED", {"code": last.get("code", "FAILED_PRECONDITION"), "field": "", "message": message}
        )

    # ---- one trial ----

    def _curve(self, run_id: str) -> list[list[float]]:
        events = rundata.run_events(self.runs, run_id)
        _, valid = rundata.curves(events)
        self._curves[run_id] = valid
        return valid

    def _objective_values(self, metrics: dict[str, float]) -> dict[str, float] | None:
        values = {o.name: metrics[o.name] for o in self.request.objectives if o.name in metrics}
        return values if len(values) == len(self.request.objectives) else None

    def _step_trial(self, trial: TrialRecord, trials: list[TrialRecord]) -> None:
        if not trial.run_id:
            self._submit(trial)
            return
        record = self.runs.get_run(trial.run_id)
        if record.status in RUN_TERMINAL:
            self._settle(trial, record)
            return
        if not trial.budget_stopped and self.over_budget(record, self.request.time_budget_seconds):
            trial.budget_stopped = True
            self.update(members=[("trials", trial.key, trial)])
            self.c.submitter.cancel(trial.run_id, "time budget of the study", self.principal)
            return
        if not self.rule.enabled:
            return
        curve = self._curve(trial.run_id)
        finished = [t.curve for t in trials if t.status == "COMPLETE"]
        others = [
            t.curve if t.status != "RUNNING" else self._curves.get(t.run_id, [])
            for t in trials
            if t.number != trial.number
        ]
        verdict = judge(self.rule, curve, finished, others)
        if not verdict.prune:
            return
        trial.status, trial.curve, trial.pruned_step = "PRUNED", curve, verdict.step
        known = {"best_valid_loss": verdict.value, "final_valid_loss": curve[-1][1]}
        values = {o.name: known[o.name] for o in self.request.objectives if o.name in known}
        trial.values = values if len(values) == len(self.request.objectives) else {}
        self.update(
            members=[("trials", trial.key, trial)],
            events=[
                self._trial_event(trial),
                ("log", {"message": f"trial {trial.number} pruned: {verdict.reason}"}),
            ],
        )
        self.c.submitter.cancel(trial.run_id, f"pruned: {verdict.reason}", self.principal)

    def _settle(self, trial: TrialRecord, record: Any) -> None:
        trial.curve = self._curve(trial.run_id)
        metrics = rundata.flatten_metrics(record.metrics)
        if record.status == "CANCELLED" and trial.budget_stopped:
            metrics = rundata.metrics_from_events(rundata.run_events(self.runs, trial.run_id))
        values = self._objective_values(metrics) if metrics else None
        if (
            record.status in ("SUCCEEDED", "CANCELLED")
            and values is not None
            and (record.status == "SUCCEEDED" or trial.budget_stopped)
        ):
            trial.status, trial.values = "COMPLETE", values
        else:
            trial.status = "FAILED"
            if record.status == "SUCCEEDED":
                missing = [o.name for o in self.request.objectives if o.name not in metrics]
                trial.error = {
                    "code": "FAILED_PRECONDITION",
                    "field": "",
                    "message": f"the run has no {', '.join(missing)}",
                }
            elif record.status == "CANCELLED":
                trial.error = {"code": "CANCELLED", "field": "", "message": "its run was cancelled"}
            else:
                trial.error = record.error or {"code": "INTERNAL", "field": "", "message": "the run failed"}
        events = [
            self._trial_event(trial),
            ("run_finished", {"run_id": trial.run_id, "status": record.status}),
        ]
        if trial.status == "FAILED":
            events.append(
                ("log", {"message": f"trial {trial.number} failed: {trial.error.get('message', '')}"})
            )
        self.update(members=[("trials", trial.key, trial)], events=events)

    def _submit(self, trial: TrialRecord) -> None:
        labels = {"experiment": self.id, "trial": str(trial.number)}
        try:
            run_id = self.adopt(labels) or self.submit(
                overlay_spec(self.request.base, trial.params),
                f"{self.name or self.id} trial {trial.number}",
                self.request.placement,
                labels,
            )
        except Unavailable as exc:
            log.warning("gateway unavailable; retrying", extra={"experiment_id": self.id, "error": str(exc)})
            return
        except ServiceError as exc:
            trial.status = "FAILED"
            trial.error = {"code": exc.code, "field": exc.field, "message": exc.message}
            self.update(
                members=[("trials", trial.key, trial)],
                events=[
                    self._trial_event(trial),
                    ("log", {"message": f"trial {trial.number} was refused: {exc}"}),
                ],
            )
            return
        trial.run_id = run_id
        self.update(
            members=[("trials", trial.key, trial)],
            runs=[run_id],
            events=[("run_submitted", {"run_id": run_id, "trial": trial.number})],
        )

    def _suggest(self, trials: list[TrialRecord], n: int) -> int:
        try:
            suggestions = self.c.suggester.suggest(
                self.request.space, trials, n, self.request.seed, self.request.objectives
            )
        except Unavailable as exc:
            log.warning(
                "optimizer unavailable; retrying", extra={"experiment_id": self.id, "error": str(exc)}
            )
            return -1
        except ServiceError as exc:
            # The optimizer refused the study's history: no later pass will do better.
            self.c.cancel_runs(self.id, "study stopped: the optimizer refused it")
            self.finish(
                "FAILED", {"code": exc.code, "field": exc.field, "message": f"the optimizer refused: {exc}"}
            )
            return -1
        seen = {params_key(t.params) for t in trials}
        added = 0
        for params, source in suggestions:
            key = params_key(params)
            if key in seen:
                continue  # never train a configuration twice, whatever the optimizer says
            seen.add(key)
            trial = TrialRecord(number=len(trials), params=params, source=source)
            # Recorded before it is submitted: a comparator that dies in between submits it on restart.
            self.update(members=[("trials", trial.key, trial)], events=[self._trial_event(trial)])
            trials.append(trial)
            self._submit(trial)
            added += 1
        return added
