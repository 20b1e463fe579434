"""An experiment's report: gathered from its runs (Redis and the comparator's local runs), drawn, and written
as Markdown, JSON, HTML and figures under the experiments root."""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from services.common.files import write_atomic
from services.common.redis_store import RunStore
from services.common.spec import DEFAULT_LEARNING_RATES, RunSpec

from . import plots, rundata
from .backends.local import LocalRunner
from .pruning import DEFAULT_WARMUP_TRIALS
from .report import ReportData, RunData, comparison_report, study_report, to_html, to_markdown
from .requests import ComparisonRequest, StudyRequest
from .state import Cell, ExperimentRecord, ExperimentStore, TrialRecord


@dataclass
class ReportFiles:
    report: ReportData
    markdown: str
    json_text: str
    figures: list[plots.Figure]
    directory: str
    html: str = ""  # report.html: the Markdown rendered, plots inline


class Reporter:
    def __init__(
        self, experiments_root: str | Path, store: ExperimentStore, runs: RunStore, local: LocalRunner
    ):
        self.root = Path(experiments_root)
        self.store = store
        self.runs = runs
        self.local = local
        # pyplot keeps global state: one report is drawn (and written) at a time in this process.
        self._lock = threading.Lock()

    def report(self, view: Any, write: bool = True) -> ReportFiles:
        """The report of an experiment (an ExperimentView); `write` also writes its files."""
        experiment_id = view.record.id
        record = view.record
        notes: list[str] = []
        experiment = {"id": record.id, "name": record.name, "status": record.status}
        if record.kind == "comparison":
            request = ComparisonRequest.from_dict(record.request)
            experiment["seeds"] = request.seeds
            experiment["setup"] = self._setup(
                request.base.given(), record, seeds=request.seeds, budget=request.time_budget_seconds
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
            experiment["setup"] = self._setup(
                request.base.given(), record, budget=request.time_budget_seconds
            )
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
        directory = self.root / experiment_id
        with self._lock:
            figures = plots.figures(report)
            markdown = to_markdown(report, [f.name for f in figures])
            json_text = json.dumps(report.to_json(), indent=1, sort_keys=True)
            page = to_html(report, markdown, {f.name: base64.b64encode(f.png).decode() for f in figures})
            if write:
                self._write_files(directory, markdown, json_text, page, figures)
        return ReportFiles(report, markdown, json_text, figures, str(directory), page)

    def _write_files(
        self, directory: Path, markdown: str, json_text: str, page: str, figures: list[plots.Figure]
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        files = {"report.md": markdown.encode(), "report.json": json_text.encode()}
        for figure in figures:
            files[f"{figure.name}.png"] = figure.png
            files[f"{figure.name}.json"] = figure.data_json.encode()
        files["report.html"] = page.encode()
        for name, content in files.items():
            write_atomic(directory / name, content)

    def _setup(
        self,
        base: dict[str, Any],
        record: ExperimentRecord,
        seeds: list[int] | None = None,
        budget: float = 0.0,
    ) -> dict[str, Any]:
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
