"""MLflow: params, per-step metrics and the adapter as an artifact; a trial of a comparison or study is a
child run nested under one parent run per experiment.

Where: MLFLOW_TRACKING_URI, else a local file store in `var/mlruns`. MLflow 3 keeps the file store in
maintenance mode and refuses it unless MLFLOW_ALLOW_FILE_STORE is set; we set it for our default only,
since a file store is what a person can open with `mlflow ui --backend-store-uri var/mlruns` and no server.
The MLflow experiment is PEFTLAB_MLFLOW_EXPERIMENT (default "peftlab").
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from services.common.paths import var_dir

from .scalars import flat_params, result_scalars, scalars
from .sink import RunContext

PARENT_TAG = "peftlab.experiment_id"
RUN_TAG = "peftlab.run_id"
ADAPTER_FILES = ("adapters.safetensors", "adapter_config.json", "spec.json", "result.json")
_STATUS = {"succeeded": "FINISHED", "early_stopped": "FINISHED", "cancelled": "KILLED", "failed": "FAILED"}


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri:
        return uri
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (var_dir() / "mlruns").as_uri()


def experiment_name() -> str:
    return os.environ.get("PEFTLAB_MLFLOW_EXPERIMENT", "peftlab")


def _experiment_id(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another process created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def parent_run(client: MlflowClient, mlflow_experiment: str, context: RunContext) -> str:
    """The experiment's parent run id, created by whichever trial gets here first.

    context.claim_parent(experiment_id, candidate) -> winner makes the creation race-free across processes
    and machines (the trainer passes a Redis SET NX); a loser ends its candidate as a deleted duplicate."""
    runs = client.search_runs(
        [mlflow_experiment], filter_string=f"tags.`{PARENT_TAG}` = '{context.experiment_id}'", max_results=1
    )
    if runs:
        return runs[0].info.run_id
    candidate = client.create_run(
        mlflow_experiment, run_name=context.experiment_id, tags={PARENT_TAG: context.experiment_id}
    ).info.run_id
    if context.claim_parent is None:
        return candidate
    winner = context.claim_parent(context.experiment_id, candidate)
    if winner != candidate:
        client.delete_run(candidate)
    return winner


class MlflowTracker:
    def __init__(self, context: RunContext):
        self.context = context
        self.client = MlflowClient(tracking_uri=tracking_uri())
        experiment = _experiment_id(self.client, experiment_name())
        tags = {RUN_TAG: context.run_id, **{f"peftlab.label.{k}": v for k, v in context.labels.items()}}
        if context.experiment_id:
            tags["mlflow.parentRunId"] = parent_run(self.client, experiment, context)
            tags[PARENT_TAG + ".child"] = context.experiment_id
        # A resumed run continues its MLflow run instead of starting another.
        existing = self.client.search_runs(
            [experiment], filter_string=f"tags.`{RUN_TAG}` = '{context.run_id}'", max_results=1
        )
        if existing:
            self.run_id = existing[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            name = context.labels.get("trial") and f"trial {context.labels['trial']}"
            name = name or context.name or context.run_id
            self.run_id = self.client.create_run(experiment, run_name=name, tags=tags).info.run_id
        self.params_logged = bool(existing)

    def _metrics(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def write(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "started":
            if not self.params_logged:
                params = [Param(k, v) for k, v in flat_params(data.get("spec") or {}).items()]
                tags = [RunTag("peftlab.backend", str(data.get("backend", "")))]
                for start in range(0, len(params), 100):  # log_batch takes at most 100 params
                    self.client.log_batch(self.run_id, params=params[start : start + 100], tags=tags)
                self.params_logged = True
        elif kind in ("step", "eval"):
            self._metrics(scalars(kind, data), int(data["step"]))
        elif kind == "result":
            self._metrics(result_scalars(data), int(data.get("steps", 0)))
            self._log_adapter()

    def _log_adapter(self) -> None:
        run_dir = Path(self.context.run_dir)
        for name in ADAPTER_FILES:
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name), artifact_path="adapter")

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=_STATUS.get(status, "FINISHED"))


def open_tracker(context: RunContext) -> MlflowTracker:
    return MlflowTracker(context)
