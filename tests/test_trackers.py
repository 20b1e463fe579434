"""Experiment trackers: a comparison through the real services writes TensorBoard event files and nested
MLflow runs, read back with TensorBoard's EventAccumulator and the MLflow client and checked against each
run's metrics.jsonl; `peftlab train --report-to` writes TensorBoard and an offline W&B run; a tracker whose
library is missing fails before training with the install command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from peftlab.v1 import comparator_pb2 as pb
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_comparator import BASE, System

from services.common.codec import spec_to_proto
from services.trainer.trackers import RunContext, TrackerError, open_trackers

REPO = Path(__file__).resolve().parents[1]


def _jsonl_losses(run_dir: Path, kind: str = "step", key: str = "train_loss") -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in records if r.get("kind") == kind}


def _tensorboard_losses(run_dir: Path) -> dict[int, float]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {e.step: e.value for e in events.Scalars("train/loss")}


def test_comparison_runs_reach_tensorboard_and_nested_mlflow_runs(
    redis_url, redis_prefix, chat_data, tmp_path, store, monkeypatch
):
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # inherited by the trainer's spawned run processes
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    system = System(redis_url, redis_prefix, chat_data, tmp_path, trainers=1)
    try:
        stub = system.stub()
        base = {**BASE, "data": system.data, "report_to": ["tensorboard", "mlflow"], "test_samples": 0}
        arms = [pb.ComparisonArm(name=m, overrides=spec_to_proto({"method": m})) for m in ("lora", "dora")]
        request = pb.StartComparisonRequest(name="trk", base=spec_to_proto(base), arms=arms, seeds=[1])
        experiment = stub.StartComparison(request, timeout=30).experiment
        ended = [
            r.event for r in stub.WatchExperiment(pb.WatchExperimentRequest(experiment_id=experiment.id))
        ]
        assert ended[-1].status == pb.EXPERIMENT_STATUS_SUCCEEDED
        run_ids = stub.GetExperiment(pb.GetExperimentRequest(experiment_id=experiment.id)).experiment.run_ids
    finally:
        system.stop()
    assert len(run_ids) == 2

    client = MlflowClient(tracking_uri=uri)
    mlflow_experiment = client.get_experiment_by_name("peftlab").experiment_id
    parents = client.search_runs(
        [mlflow_experiment], filter_string=f"tags.`peftlab.experiment_id` = '{experiment.id}'"
    )
    assert len(parents) == 1  # one parent per experiment, however many trials raced to create it
    for run_id in run_ids:
        record = store.get_run(run_id)
        run_dir = Path(record.run_dir)
        expected = _jsonl_losses(run_dir)
        assert len(expected) == BASE["iters"]
        assert _tensorboard_losses(run_dir) == pytest.approx(expected, rel=1e-6)

        (child,) = client.search_runs(
            [mlflow_experiment], filter_string=f"tags.`peftlab.run_id` = '{run_id}'"
        )
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.info.status == "FINISHED"
        assert child.data.params["method"] == record.labels["arm"]
        history = client.get_metric_history(child.info.run_id, "train/loss")
        assert {m.step: m.value for m in history} == pytest.approx(expected, rel=1e-6)
        valid = {m.step: m.value for m in client.get_metric_history(child.info.run_id, "valid/loss")}
        assert valid == pytest.approx(_jsonl_losses(run_dir, "eval", "valid_loss"), rel=1e-6)
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id, "adapter")}
        assert {"adapter/adapters.safetensors", "adapter/adapter_config.json"} <= artifacts


def test_cli_train_report_to_tensorboard_and_offline_wandb(tiny_model, chat_data, tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "services.cli.main", "train", "--model", str(tiny_model)]
    command += ["--data", str(chat_data), "--iters", "3", "--report-to", "tensorboard,wandb", "--no-baseline"]
    for setting in ("warmup_steps=0", "batch_size=2", "max_seq_length=64", "test_samples=0", "val_batches=1"):
        command += ["--set", setting]
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("WANDB_")}
    done = subprocess.run(
        [*command, "--output", str(run_dir)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert _tensorboard_losses(run_dir) == pytest.approx(_jsonl_losses(run_dir), rel=1e-6)
    # W&B ships no public reader for its offline files; `wandb sync` uploads this dir later.
    (offline,) = (run_dir / "wandb").glob(f"offline-run-*-{run_dir.name}")
    written = (offline / f"run-{run_dir.name}.wandb").read_bytes()
    assert b"train/loss" in written and b"valid/loss" in written


def test_a_missing_tracker_library_names_the_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # what `import wandb` meets where it is not installed
    with pytest.raises(TrackerError) as caught:
        open_trackers(["tensorboard", "wandb"], RunContext(run_id="r", run_dir=tmp_path))
    assert "pip install 'peftlab[wandb]'" in caught.value.message
    assert caught.value.field == "spec.report_to"
    assert not (tmp_path / "tensorboard").exists()  # nothing opened before the check failed
