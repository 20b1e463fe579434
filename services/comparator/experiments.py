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

import json
import logging
import math
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServiceError,
    Unavailable,
)
from services.common.records import now_ms
from services.common.redis_store import RunStore
from services.common.status_machine import TERMINAL as RUN_TERMINAL
from services.common.validation import Roots, check_name, check_range, check_spec, new_id, page_size

from . import plots, rundata
from .backends.local import LocalRunner
from .config import ComparatorConfig
from .pruning import DEFAULT_WARMUP_TRIALS, RULES, PruningRule, judge
from .report import OBJECTIVES, ReportData, RunData, comparison_report, study_report, to_html, to_markdown
from .state import (
    TERMINAL,
    Cell,
    ExperimentEvent,
    ExperimentRecord,
    ExperimentStore,
    LeaseLost,
    StatusRefused,
    TrialRecord,
)

log = logging.getLogger(__name__)

BACKENDS = ("mlx", "torch")
MAX_SEED = 2**31 - 1
# A study whose first trials all failed stops instead of spending its whole budget on the same error.
FAIL_FAST_TRIALS = 3


# ---- requests ---------------------------------------------------------------------------------------------


@dataclass
class Arm:
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    backend: str = "mlx"


@dataclass
class ComparisonRequest:
    name: str = ""
    base: dict[str, Any] = field(default_factory=dict)
    arms: list[Arm] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    placement: dict[str, Any] = field(default_factory=dict)
    time_budget_seconds: float = 0.0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ComparisonRequest:
        return cls(**{**values, "arms": [Arm(**a) for a in values.get("arms", [])]})


@dataclass
class Objective:
    name: str = "best_valid_loss"
    direction: str = "minimize"  # minimize | maximize


@dataclass
class StudyRequest:
    name: str = ""
    base: dict[str, Any] = field(default_factory=dict)
    space: dict[str, Any] = field(default_factory=dict)  # SearchSpace as JSON (optimizer.proto's field names)
    n_trials: int = 0
    parallelism: int = 1
    objectives: list[Objective] = field(default_factory=list)
    pruning: PruningRule = field(default_factory=PruningRule)
    seed: int = 0
    placement: dict[str, Any] = field(default_factory=dict)
    time_budget_seconds: float = 0.0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StudyRequest:
        return cls(
            **{
                **values,
                "objectives": [Objective(**o) for o in values.get("objectives", [])],
                "pruning": PruningRule(**values.get("pruning", {})),
            }
        )

    def parameter_names(self) -> list[str]:
        return [p.get("name", "") for p in self.space.get("parameters", [])]


# ---- what the core needs from outside (implemented over gRPC in clients.py) ---------------------------------


class RunSubmitter(Protocol):
    def submit(
        self,
        spec: dict[str, Any],
        name: str,
        placement: dict[str, Any],
        labels: dict[str, str],
        experiment_id: str,
    ) -> str:
        """Submit a run through the gateway; its id. ServiceError when refused (Unavailable: try later)."""

    def cancel(self, run_id: str, reason: str) -> None: ...


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


# ---- views ------------------------------------------------------------------------------------------------


@dataclass
class ExperimentView:
    """An experiment with everything GetExperiment answers."""

    record: ExperimentRecord
    run_ids: list[str]
    finished_runs: int
    trials: list[TrialRecord] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)


@dataclass
class ReportFiles:
    report: ReportData
    markdown: str
    json_text: str
    figures: list[plots.Figure]
    directory: str


def params_key(params: dict[str, Any]) -> str:
    """Canonical text of a configuration (1 and 1.0 are the same value, True and 1 are not)."""

    def norm(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return v
        return float(v)

    return json.dumps({k: norm(v) for k, v in params.items()}, sort_keys=True)


# ---- validation -------------------------------------------------------------------------------------------


def _check_spec(spec: dict[str, Any], roots: Roots, field_name: str) -> None:
    """The engine's RunSpec rules and path confinement. Existence of the model and data dirs is the
    gateway's to check (they live on its machine and the trainers'), at submission."""
    try:
        check_spec(spec, roots, field_name)
    except NotFound:
        pass


def check_comparison(request: ComparisonRequest, roots: Roots) -> ComparisonRequest:
    check_name(request.name)
    check_range(len(request.arms), 1, 32, "arms")
    names = [arm.name for arm in request.arms]
    for i, arm in enumerate(request.arms):
        if not 1 <= len(arm.name) <= 64:
            raise InvalidArgument(f"must be 1-64 characters, got {len(arm.name)}", f"arms[{i}].name")
        if "/" in arm.name or any(ord(c) < 32 for c in arm.name):
            raise InvalidArgument("must not contain '/' or control characters", f"arms[{i}].name")
        arm.backend = arm.backend or "mlx"
        if arm.backend not in BACKENDS:
            raise InvalidArgument(
                f"must be one of {', '.join(BACKENDS)}, got {arm.backend!r}", f"arms[{i}].backend"
            )
    if len(set(names)) != len(names):
        raise InvalidArgument("arm names must be unique", "arms")
    seeds = list(request.seeds) or [0]
    check_range(len(seeds), 1, 32, "seeds")
    if len(set(seeds)) != len(seeds):
        raise InvalidArgument("seeds must be distinct", "seeds")
    for i, seed in enumerate(seeds):
        check_range(seed, 0, MAX_SEED, f"seeds[{i}]")
    request.seeds = [int(s) for s in seeds]
    if not math.isfinite(request.time_budget_seconds) or request.time_budget_seconds < 0:
        raise InvalidArgument(f"must be >= 0, got {request.time_budget_seconds}", "time_budget_seconds")
    _check_spec(request.base, roots, "base")
    for i, arm in enumerate(request.arms):
        _check_spec({**request.base, **arm.overrides}, roots, f"arms[{i}].overrides")
    return request


def check_study(request: StudyRequest, roots: Roots) -> StudyRequest:
    from services.common.spec import RunSpec

    check_name(request.name)
    check_range(request.n_trials, 1, 1000, "n_trials")
    request.parallelism = request.parallelism or 1
    check_range(request.parallelism, 1, request.n_trials, "parallelism")
    check_range(request.seed, 0, MAX_SEED, "seed")
    if not math.isfinite(request.time_budget_seconds) or request.time_budget_seconds < 0:
        raise InvalidArgument(f"must be >= 0, got {request.time_budget_seconds}", "time_budget_seconds")
    request.objectives = request.objectives or [Objective()]
    names = [o.name for o in request.objectives]
    for i, objective in enumerate(request.objectives):
        if objective.name not in OBJECTIVES:
            raise InvalidArgument(
                f"must be a run metric ({', '.join(sorted(OBJECTIVES))}), got {objective.name!r}",
                f"objectives[{i}].name",
            )
    if len(set(names)) != len(names):
        raise InvalidArgument("objective names must be distinct", "objectives")
    rule = request.pruning
    if rule.rule not in RULES:
        raise InvalidArgument(f"must be one of {', '.join(RULES)}, got {rule.rule!r}", "pruning.rule")
    check_range(rule.min_steps, 0, 10**7, "pruning.min_steps")
    check_range(rule.warmup_trials, 0, 1000, "pruning.warmup_trials")
    parameters = request.parameter_names()
    if not parameters:
        raise InvalidArgument("must have at least one parameter", "space.parameters")
    fields = set(RunSpec.field_names())
    for i, name in enumerate(parameters):
        if name not in fields:
            raise InvalidArgument(f"{name!r} is not a RunSpec field", f"space.parameters[{i}].name")
    _check_spec(request.base, roots, "base")
    return request


# ---- the core ---------------------------------------------------------------------------------------------


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
        self._report_lock = threading.Lock()

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

    def start_comparison(self, request: ComparisonRequest) -> ExperimentView:
        request = check_comparison(request, self.roots)
        record = ExperimentRecord(
            id=new_id("x"),
            kind="comparison",
            name=request.name,
            request=asdict(request),
            total_runs=len(request.arms) * len(request.seeds),
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

    def start_study(self, request: StudyRequest) -> ExperimentView:
        request = check_study(request, self.roots)
        # The optimizer checks the space (types, ranges, conditions) before anything is recorded.
        self.suggester.suggest(request.space, [], 1, request.seed, request.objectives)
        record = ExperimentRecord(
            id=new_id("x"),
            kind="study",
            name=request.name,
            request=asdict(request),
            total_runs=request.n_trials,
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

    def cancel(self, experiment_id: str) -> ExperimentView:
        record = self.store.get(experiment_id)
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
        self._cancel_runs(experiment_id, "experiment cancelled")
        self._write_report_quietly(experiment_id)
        return self.get(experiment_id)

    def _cancel_runs(self, experiment_id: str, reason: str) -> None:
        """Stop the experiment's queued and running runs (finished ones are kept)."""
        run_ids = self.store.run_ids(experiment_id)
        for record in self.runs.get_runs(run_ids):
            if record.status not in RUN_TERMINAL:
                try:
                    self.submitter.cancel(record.id, reason)
                except ServiceError as exc:
                    log.warning("could not cancel run", extra={"run_id": record.id, "error": str(exc)})
        for run in self.store.local_runs(experiment_id).values():
            if run.status in ("QUEUED", "RUNNING"):
                self.local.cancel(run)

    def watch(
        self,
        experiment_id: str,
        after: str = "",
        is_active: Callable[[], bool] = lambda: True,
        poll_ms: int = 1000,
    ) -> Iterator[ExperimentEvent]:
        """The experiment's events after `after`; ends once it ended and every event was sent."""
        self.store.status_of(experiment_id)
        last = after
        while is_active():
            events = self.store.read_events(experiment_id, last, block_ms=poll_ms)
            for event in events:
                yield event
                last = event.id
            if not events and self.store.status_of(experiment_id) in TERMINAL:
                # Anything written with the final status is in the stream already; drain and end.
                for event in self.store.read_events(experiment_id, last):
                    yield event
                return

    # ---- reports ----

    def report(self, experiment_id: str, write: bool = True) -> ReportFiles:
        view = self.get(experiment_id)
        record = view.record
        notes: list[str] = []
        experiment = {"id": record.id, "name": record.name, "status": record.status}
        if record.kind == "comparison":
            request = ComparisonRequest.from_dict(record.request)
            experiment["seeds"] = request.seeds
            experiment["setup"] = self._setup(
                request.base, record, seeds=request.seeds, budget=request.time_budget_seconds
            )
            runs = self._comparison_runs(experiment_id, view.cells)
            if any(a.backend == "torch" for a in request.arms):
                available, why = self.local.available()
                if not available:
                    notes.append(f"The PyTorch backend is missing here ({why}): its arms could not run.")
                else:
                    notes.append(
                        "PyTorch arms ran on the comparator's machine, one at a time and after the MLX runs, "
                        "so their timings do not overlap with other runs of this comparison."
                    )
            report = comparison_report(experiment, [asdict(a) for a in request.arms], runs, notes)
        else:
            request = StudyRequest.from_dict(record.request)
            experiment["setup"] = self._setup(request.base, record, budget=request.time_budget_seconds)
            experiment["setup"].update(
                {
                    "trials": f"{len(view.trials)} of {request.n_trials}, {request.parallelism} at a time",
                    "pruning": (
                        f"{request.pruning.rule}, from step {request.pruning.min_steps}, after "
                        f"{request.pruning.warmup_trials or DEFAULT_WARMUP_TRIALS} finished trials"
                    )
                    if request.pruning.enabled
                    else "off",
                    "space": ", ".join(request.parameter_names()),
                }
            )
            runs = self._study_runs(view.trials)
            objectives = [asdict(o) for o in request.objectives]
            report = study_report(experiment, [asdict(t) for t in view.trials], runs, objectives, notes)
        if record.error:
            report.notes.insert(0, f"Experiment {record.status}: {record.error.get('message', '')}")
        markdown = json_text = ""
        directory = Path(self.config.experiments_root) / experiment_id
        # pyplot keeps global state: one report is drawn (and written) at a time in this process.
        with self._report_lock:
            figures = plots.figures(report)
            markdown = to_markdown(report, [f.name for f in figures])
            json_text = json.dumps(report.to_json(), indent=1, sort_keys=True)
            if write:
                self._write_files(directory, report, markdown, json_text, figures)
        return ReportFiles(report, markdown, json_text, figures, str(directory))

    def _write_files(
        self, directory: Path, report: ReportData, markdown: str, json_text: str, figures: list[plots.Figure]
    ) -> None:
        import base64

        directory.mkdir(parents=True, exist_ok=True)
        files = {"report.md": markdown.encode(), "report.json": json_text.encode()}
        for figure in figures:
            files[f"{figure.name}.png"] = figure.png
            files[f"{figure.name}.json"] = figure.data_json.encode()
        images = {f.name: base64.b64encode(f.png).decode() for f in figures}
        files["report.html"] = to_html(report, markdown, images).encode()
        for name, content in files.items():
            tmp = directory / f".{name}.tmp"
            tmp.write_bytes(content)
            tmp.replace(directory / name)

    def _write_report_quietly(self, experiment_id: str) -> None:
        try:
            self.report(experiment_id)
        except Exception:
            log.exception("writing the report failed", extra={"experiment_id": experiment_id})

    def _setup(
        self,
        base: dict[str, Any],
        record: ExperimentRecord,
        seeds: list[int] | None = None,
        budget: float = 0.0,
    ) -> dict[str, Any]:
        from services.common.spec import DEFAULT_LEARNING_RATES, RunSpec

        defaults = RunSpec()
        setup: dict[str, Any] = {
            "model": base.get("model") or "smollm2-135m-instruct (default)",
            "data": base.get("data") or "default",
            "steps per run": base.get("iters", defaults.iters),
            "batch": f"{base.get('batch_size', defaults.batch_size)} rows x "
            f"{base.get('max_seq_length', defaults.max_seq_length)} tokens, packing "
            f"{'on' if base.get('packing', True) else 'off'}",
            "evaluation": f"every {base.get('eval_every', defaults.eval_every)} steps on "
            f"{base.get('val_batches', defaults.val_batches)} validation batches; exact match on "
            f"{base.get('test_samples', defaults.test_samples)} test samples",
        }
        if "learning_rate" not in base:
            setup["learning rate"] = "per method default " + ", ".join(
                f"{m} {lr:g}" for m, lr in DEFAULT_LEARNING_RATES.items()
            )
        if seeds is not None:
            setup["seeds"] = ", ".join(str(s) for s in seeds)
        if budget:
            setup["time budget per run"] = f"{budget:g} s"
        trainers = self.runs.list_trainers()
        if trainers:
            setup["trainers"] = "; ".join(
                f"{t.id}: {t.hardware.get('device_kind', '?')} {t.hardware.get('device_name', '')}".strip()
                + f" ({t.slots} slot{'s' if t.slots != 1 else ''})"
                for t in trainers
            )
        return setup

    def _comparison_runs(self, experiment_id: str, cells: list[Cell]) -> list[RunData]:
        out: list[RunData] = []
        mlx = {c.run_id: c for c in cells if c.backend == "mlx" and c.run_id}
        records = {r.id: r for r in self.runs.get_runs(list(mlx))}
        local = self.store.local_runs(experiment_id)
        for cell in cells:
            if cell.backend == "mlx" and cell.run_id in records:
                out.append(
                    rundata.from_run(
                        self.runs, records[cell.run_id], cell.arm, cell.seed, cell.budget_stopped
                    )
                )
            elif cell.run_id in local:
                out.append(rundata.from_local(local[cell.run_id], cell.arm, cell.seed))
            else:
                out.append(
                    RunData(
                        run_id=cell.run_id,
                        label=cell.arm,
                        seed=cell.seed,
                        backend=cell.backend,
                        status=cell.run_status or ("FAILED" if cell.error else "QUEUED"),
                        error=cell.error,
                    )
                )
        return out

    def _study_runs(self, trials: list[TrialRecord]) -> list[RunData]:
        records = {r.id: r for r in self.runs.get_runs([t.run_id for t in trials if t.run_id])}
        out = []
        for trial in trials:
            label = f"trial {trial.number}"
            if trial.run_id in records:
                data = rundata.from_run(
                    self.runs, records[trial.run_id], label, budget_stopped=trial.budget_stopped
                )
            else:
                data = RunData(run_id=trial.run_id, label=label, status="FAILED", error=trial.error)
            data.params = trial.params
            data.trial_status = trial.status
            if trial.status == "PRUNED":
                data.metrics = {}  # a pruned trial's numbers are partial: not in the statistics
            out.append(data)
        return out


# ---- drivers ----------------------------------------------------------------------------------------------


class Driver:
    """One experiment's step function; all state in Redis, so any comparator can take the next step."""

    kind = ""

    def __init__(self, comparator: Comparator, record: ExperimentRecord):
        self.c = comparator
        self.id = record.id
        self.name = record.name
        self.store = comparator.store
        self.runs = comparator.runs
        self.owner = comparator.owner

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
        self.c._write_report_quietly(self.id)

    def submit(
        self, spec: dict[str, Any], name: str, placement: dict[str, Any], labels: dict[str, str]
    ) -> str:
        return self.c.submitter.submit(spec, name, placement, labels, self.id)

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
            self.c._cancel_runs(self.id, "experiment cancelled")
        return status != "RUNNING"


class ComparisonDriver(Driver):
    kind = "comparison"

    def __init__(self, comparator: Comparator, record: ExperimentRecord):
        super().__init__(comparator, record)
        self.request = ComparisonRequest.from_dict(record.request)
        self.arms = {arm.name: arm for arm in self.request.arms}

    def spec_of(self, cell: Cell) -> dict[str, Any]:
        return {**self.request.base, **self.arms[cell.arm].overrides, "seed": cell.seed}

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
                self.c.submitter.cancel(cell.run_id, "time budget of the comparison")
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


class StudyDriver(Driver):
    kind = "study"

    def __init__(self, comparator: Comparator, record: ExperimentRecord):
        super().__init__(comparator, record)
        self.request = StudyRequest.from_dict(record.request)
        self.rule = self.request.pruning
        if self.rule.enabled and self.rule.warmup_trials == 0:
            self.rule = PruningRule(True, self.rule.min_steps, DEFAULT_WARMUP_TRIALS, self.rule.rule)
        self._curves: dict[str, list[list[float]]] = {}

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
            self.c._cancel_runs(self.id, "study stopped: its first trials all failed")
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
        if any(t.status == "COMPLETE" for t in trials):
            reason = (
                "the search space has no untried configuration left" if exhausted else "every trial ended"
            )
            self.finish("SUCCEEDED", reason=reason)
        else:
            self._fail(trials, f"all {len(trials)} trials failed" if trials else "no configuration to try")
        return False

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
            self.c.submitter.cancel(trial.run_id, "time budget of the study")
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
        self.c.submitter.cancel(trial.run_id, f"pruned: {verdict.reason}")

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
                {**self.request.base, **trial.params},
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
            self.c._cancel_runs(self.id, "study stopped: the optimizer refused it")
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
