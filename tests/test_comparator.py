"""The comparator end to end, no mocks: Redis + trainers + gateway + optimizer + comparator on loopback ports,
runs of the tiny model.

1. A comparison of lora / qlora / full over 2 seeds (plus an arm whose runs fail on the trainer): the report's
   numbers are the runs' own metrics, the failures carry their errors, the files are written, and the gateway
   forwards every experiment RPC.
2. A 6-trial study, 2 at a time over two trainers, with pruning: it ends, never trains a configuration twice,
   and its best trial is the lowest objective recorded in Redis.
3. A study survives its comparator being killed (SIGKILL) and restarted: it continues from Redis, and no
   trial is submitted twice.
4. A study whose trials all fail ends FAILED with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from peftlab.v1 import comparator_pb2 as pb
from peftlab.v1 import comparator_pb2_grpc, gateway_pb2_grpc, optimizer_pb2
from service_helpers import Running, free_port, start_comparator, start_gateway, start_trainer, wait_for

from services.common.codec import spec_to_proto
from services.common.config import load_config
from services.common.identity import Principal
from services.common.interceptors import outgoing_metadata
from services.comparator.state import ExperimentStore
from services.optimizer.config import OptimizerConfig
from services.optimizer.server import make_server as make_optimizer

REPO = Path(__file__).resolve().parents[1]
# Small and fast: 4 steps of 2 rows x 64 tokens, an evaluation every 2, one test sample scored.
BASE = {
    "model": "tiny-llama",
    "rank": 4,
    "batch_size": 2,
    "max_seq_length": 64,
    "iters": 4,
    "warmup_steps": 0,
    "eval_every": 2,
    "val_batches": 1,
    "save_every": 0,
    "test_samples": 1,
    "max_new_tokens": 8,
}


class System:
    """Trainers, gateway, optimizer and (in-process) comparator sharing one Redis prefix."""

    def __init__(self, redis_url, prefix, chat_data, tmp_path, trainers=2, comparator=True):
        self.redis_url, self.prefix, self.tmp = redis_url, prefix, tmp_path
        self.data_root, self.runs_root = chat_data.parent, tmp_path / "runs"
        self.data = chat_data.name
        self.trainers = [
            start_trainer(redis_url, prefix, self.data_root, self.runs_root, trainer_id=f"tr-{i}")
            for i in range(trainers)
        ]
        self.optimizer = make_optimizer(load_config(OptimizerConfig, env={}, port=0))
        self.optimizer.start()
        self.optimizer_address = f"127.0.0.1:{self.optimizer.port}"
        self.comparator_port = free_port()
        self.gateway = start_gateway(
            redis_url,
            prefix,
            self.data_root,
            self.runs_root,
            comparator_address=f"127.0.0.1:{self.comparator_port}",
            optimizer_address=self.optimizer_address,
        )
        self.comparator: Running | None = None
        if comparator:
            self.start_comparator()

    def comparator_values(self) -> dict:
        return {
            "redis_url": self.redis_url,
            "redis_prefix": self.prefix,
            "port": self.comparator_port,
            "gateway_address": self.gateway.address,
            "optimizer_address": self.optimizer_address,
            "experiments_root": self.tmp / "experiments",
            "data_root": self.data_root,
            "poll_interval": 0.3,
            "lease_seconds": 3.0,
        }

    def start_comparator(self) -> None:
        self.comparator = start_comparator(**self.comparator_values())

    def stub(self) -> gateway_pb2_grpc.GatewayStub:
        return gateway_pb2_grpc.GatewayStub(self.gateway.channel)  # through the gateway, as users do

    def experiments(self) -> ExperimentStore:
        return ExperimentStore(self.trainers[0].core.store.r, self.prefix)

    def stop(self) -> None:
        if self.comparator:
            self.comparator.stop(grace=0)
        self.gateway.stop(grace=0)
        self.optimizer.stop(0)
        for trainer in self.trainers:
            trainer.stop(grace=0)


@pytest.fixture
def system(redis_url, redis_prefix, chat_data, tmp_path):
    running = System(redis_url, redis_prefix, chat_data, tmp_path)
    yield running
    running.stop()


def _wait_ended(stub, experiment_id: str, timeout: float = 240.0) -> pb.Experiment:
    def ended():
        request = pb.GetExperimentRequest(experiment_id=experiment_id)
        reply = _try(
            lambda: stub.GetExperiment(request, timeout=10)
        )  # a restarting comparator is UNAVAILABLE
        return reply.experiment if reply and reply.experiment.status != pb.EXPERIMENT_STATUS_RUNNING else None

    return wait_for(ended, timeout=timeout, interval=0.5, what=f"experiment {experiment_id} to end")


# ---- 1. comparison ----


def test_comparison_report_matches_the_runs_own_metrics(system, store):
    stub = system.stub()
    arms = [
        pb.ComparisonArm(name=m, overrides=spec_to_proto({"method": m})) for m in ("lora", "qlora", "full")
    ]
    # Passes every check, then fails on the trainer: its predicted peak exceeds a 1 kB budget.
    arms.append(pb.ComparisonArm(name="no-memory", overrides=spec_to_proto({"memory_budget_gb": 1e-6})))
    request = pb.StartComparisonRequest(
        name="methods", base=spec_to_proto({**BASE, "data": system.data}), arms=arms, seeds=[1, 2]
    )
    experiment = stub.StartComparison(request, timeout=30).experiment
    assert experiment.kind == pb.EXPERIMENT_KIND_COMPARISON and experiment.total_runs == 8

    events = [
        r.event
        for r in stub.WatchExperiment(pb.WatchExperimentRequest(experiment_id=experiment.id), timeout=300)
    ]
    assert events[-1].status == pb.EXPERIMENT_STATUS_SUCCEEDED
    submitted = {e.run_submitted for e in events if e.WhichOneof("payload") == "run_submitted"}
    finished = {e.run_finished for e in events if e.WhichOneof("payload") == "run_finished"}
    assert len(submitted) == 8 and submitted == finished
    assert any("no-memory seed 1 failed" in e.log for e in events if e.WhichOneof("payload") == "log")

    experiment = stub.GetExperiment(
        pb.GetExperimentRequest(experiment_id=experiment.id), timeout=10
    ).experiment
    assert experiment.finished_runs == 8 and len(experiment.run_ids) == 8
    report = stub.GetReport(pb.GetReportRequest(experiment_id=experiment.id), timeout=60).report
    assert report.complete
    rows = {row.label: row for row in report.rows}
    assert set(rows) == {"lora", "qlora", "full", "no-memory"}

    runs = [store.get_run(run_id) for run_id in experiment.run_ids]
    assert {r.trainer for r in runs} == {"tr-0", "tr-1"}  # placed over the pool
    for name in ("lora", "qlora", "full"):
        mine = [r for r in runs if r.labels["arm"] == name]
        assert sorted(r.spec["seed"] for r in mine) == [1, 2] and all(r.status == "SUCCEEDED" for r in mine)
        row = rows[name]
        assert row.n == 2 and row.status == "ok" and sorted(row.run_ids) == sorted(r.id for r in mine)
        for metric in (
            "best_valid_loss",
            "final_valid_loss",
            "wall_seconds",
            "tokens_per_second",
            "peak_memory_bytes",
        ):
            values = [r.metrics[metric] for r in mine]
            mean = sum(values) / 2
            assert row.mean[metric] == pytest.approx(mean, rel=1e-9)
            assert row.std[metric] == pytest.approx(
                abs(values[0] - values[1]) / math.sqrt(2), rel=1e-6, abs=1e-12
            )
            # 95% CI half-width with 1 degree of freedom: t(0.975, 1) = 12.706.
            assert row.ci95[metric] == pytest.approx(
                12.7062 * row.std[metric] / math.sqrt(2), rel=1e-4, abs=1e-9
            )
        exact = [r.metrics["task"]["exact_match"] for r in mine]
        assert row.mean["task.exact_match"] == pytest.approx(sum(exact) / 2)
        assert row.mean["trainable_parameters"] == mine[0].metrics["trainable_parameters"]
        assert row.mean["predicted_peak_memory_bytes"] == pytest.approx(
            sum(r.metrics["predicted_peak_memory_bytes"] for r in mine) / 2
        )
    # Full fine-tuning trains every weight; the adapters a small fraction.
    assert rows["full"].mean["trainable_parameters"] > 10 * rows["lora"].mean["trainable_parameters"]
    assert rows["no-memory"].n == 0 and rows["no-memory"].status == "failed"
    failures = [f for f in report.failures if f.label == "no-memory"]
    assert len(failures) == 2 and all(f.code == "RESOURCE_EXHAUSTED" for f in failures)
    assert all("memory_budget_gb" in f.message for f in failures)
    # Paired tests between the three arms with metrics, Holm-corrected.
    pairs = {(t.a, t.b) for t in report.tests if t.metric == "best_valid_loss"}
    seed_tests = [t for t in report.tests if t.test == "paired-t"]
    assert len(pairs) == 3 and all(t.n == 2 and 0 <= t.p_adjusted <= 1 for t in seed_tests)
    # Per-sample outcomes: each run's test_samples.jsonl, its TaskScore.sample_exact, the report's samples,
    # and McNemar's test per pair of arms over (seed, sample) pairs.
    by_run = {o.run_id: o for o in report.samples}
    for run in runs:
        if run.status != "SUCCEEDED":
            continue
        lines = (Path(run.run_dir) / "test_samples.jsonl").read_text().splitlines()
        exact = [json.loads(line)["exact"] for line in lines]
        assert exact == run.metrics["task"]["sample_exact"] == list(by_run[run.id].exact)
        assert len(exact) == run.metrics["task"]["n"] > 0
    mcnemar = [t for t in report.tests if t.test == "mcnemar-exact"]
    assert len(mcnemar) == 3 and all(t.n == 2 * len(exact) and t.a_only + t.b_only <= t.n for t in mcnemar)
    assert any(row.pareto for row in report.rows)
    assert {p.name for p in report.plots} >= {"loss_curves", "pareto"}
    assert all(p.png.startswith(b"\x89PNG") for p in report.plots)

    directory = Path(report.directory)
    assert directory == system.tmp / "experiments" / experiment.id
    for name in ("report.md", "report.json", "report.html", "loss_curves.png", "pareto.png"):
        assert (directory / name).is_file(), name
    saved = json.loads((directory / "report.json").read_text())
    assert {r["label"]: r["mean"]["best_valid_loss"] for r in saved["rows"] if r["n"]} == pytest.approx(
        {k: v.mean["best_valid_loss"] for k, v in rows.items() if v.n}
    )
    markdown = (directory / "report.md").read_text()
    assert "| lora |" in markdown and "Which differences are significant" in markdown
    assert "RESOURCE_EXHAUSTED" in markdown and "![pareto](pareto.png)" in markdown

    listed = stub.ListExperiments(pb.ListExperimentsRequest(page_size=5), timeout=10).experiments
    assert [e.id for e in listed] == [experiment.id]
    with pytest.raises(grpc.RpcError) as caught:
        stub.CancelExperiment(pb.CancelExperimentRequest(experiment_id=experiment.id), timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_bad_requests_name_the_field(system):
    stub = comparator_pb2_grpc.ComparatorStub(system.comparator.channel)  # the comparator's own checks
    base = spec_to_proto({**BASE, "data": system.data})

    # As the gateway calls it: the service token (when set) and the user it acts for.
    AS_GATEWAY = outgoing_metadata(Principal("tester").metadata())  # noqa: N806

    def field(call) -> tuple:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        return caught.value.code(), dict(caught.value.trailing_metadata()).get("peftlab-field", "")

    arm = pb.ComparisonArm(name="a", overrides=spec_to_proto({"method": "lora"}))
    assert field(
        lambda: stub.StartComparison(
            pb.StartComparisonRequest(base=base, arms=[arm, arm]), timeout=5, metadata=AS_GATEWAY
        )
    ) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "arms",
    )
    torch_typo = pb.ComparisonArm(name="b", backend="jax")
    assert (
        field(
            lambda: stub.StartComparison(
                pb.StartComparisonRequest(base=base, arms=[torch_typo]), timeout=5, metadata=AS_GATEWAY
            )
        )[1]
        == "arms[0].backend"
    )
    space = optimizer_pb2.SearchSpace(
        parameters=[
            optimizer_pb2.Parameter(name="lr", float_range=optimizer_pb2.FloatRange(low=1e-4, high=1e-2))
        ]
    )
    study = pb.StartStudyRequest(base=base, space=space, n_trials=2)
    assert (
        field(lambda: stub.StartStudy(study, timeout=5, metadata=AS_GATEWAY))[1] == "space.parameters[0].name"
    )
    bad_range = optimizer_pb2.SearchSpace(
        parameters=[
            optimizer_pb2.Parameter(
                name="learning_rate", float_range=optimizer_pb2.FloatRange(low=1e-2, high=1e-4)
            )
        ]
    )
    code, name = field(
        lambda: stub.StartStudy(
            pb.StartStudyRequest(base=base, space=bad_range, n_trials=2), timeout=5, metadata=AS_GATEWAY
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and name.startswith("space")  # the optimizer's own check
    objective = optimizer_pb2.StudyObjective(name="accuracy")
    request = pb.StartStudyRequest(base=base, space=bad_range, n_trials=2, objectives=[objective])
    assert field(lambda: stub.StartStudy(request, timeout=5, metadata=AS_GATEWAY))[1] == "objectives[0].name"
    missing = pb.GetExperimentRequest(experiment_id="x-nope")
    assert field(lambda: stub.GetExperiment(missing, timeout=5, metadata=AS_GATEWAY)) == (
        grpc.StatusCode.NOT_FOUND,
        "experiment_id",
    )
    assert system.experiments().active() == []  # nothing was recorded


# ---- 2. a study over two trainers ----


def _space(*parameters) -> optimizer_pb2.SearchSpace:
    return optimizer_pb2.SearchSpace(parameters=list(parameters))


LR = optimizer_pb2.Parameter(
    name="learning_rate", float_range=optimizer_pb2.FloatRange(low=1e-4, high=3e-2, log=True)
)
METHOD = optimizer_pb2.Parameter(
    name="method",
    categorical=optimizer_pb2.Choices(
        values=[optimizer_pb2.ParameterValue(string_value=m) for m in ("lora", "dora", "full")]
    ),
)


def test_study_of_six_trials_two_at_a_time(system, store):
    stub = system.stub()
    request = pb.StartStudyRequest(
        name="lr-and-method",
        base=spec_to_proto({**BASE, "data": system.data, "test_samples": 0}),
        space=_space(METHOD, LR),
        n_trials=6,
        parallelism=2,
        pruning=pb.Pruning(enabled=True, warmup_trials=2, min_steps=2),
        seed=3,
    )
    experiment = stub.StartStudy(request, timeout=30).experiment
    assert experiment.kind == pb.EXPERIMENT_KIND_STUDY and experiment.total_runs == 6
    experiments = system.experiments()
    most_at_once = 0
    deadline = time.monotonic() + 240
    while experiments.status_of(experiment.id) == "RUNNING":
        trials = experiments.trials(experiment.id)
        active = [t for t in trials if t.status == "RUNNING" and t.run_id]
        most_at_once = max(most_at_once, len(active))
        assert len(active) <= 2
        assert time.monotonic() < deadline, "study did not end"
        time.sleep(0.2)
    experiment = stub.GetExperiment(
        pb.GetExperimentRequest(experiment_id=experiment.id), timeout=10
    ).experiment
    assert experiment.status == pb.EXPERIMENT_STATUS_SUCCEEDED, experiment.error.message
    assert most_at_once == 2

    trials = experiments.trials(experiment.id)
    assert [t.number for t in trials] == list(range(6)) and len(experiment.trials) == 6
    configurations = [json.dumps(t.params, sort_keys=True) for t in trials]
    assert len(set(configurations)) == 6  # never the same configuration twice
    runs = [store.get_run(t.run_id) for t in trials]
    assert len({r.id for r in runs}) == 6 and sorted(experiment.run_ids) == sorted(r.id for r in runs)
    assert len({json.dumps(r.spec, sort_keys=True) for r in runs}) == 6
    for trial, run in zip(trials, runs):
        assert run.labels == {"experiment": experiment.id, "trial": str(trial.number)}
        assert run.spec["method"] == trial.params["method"]
        assert run.spec["learning_rate"] == pytest.approx(trial.params["learning_rate"])
        if trial.status == "COMPLETE":
            assert run.status == "SUCCEEDED"
            assert trial.values["best_valid_loss"] == run.metrics["best_valid_loss"]
        else:
            assert trial.status == "PRUNED" and trial.pruned_step >= 2
            # The pruner cancels the run; a 4-step run may have finished before the cancel reaches it.
            assert run.status in ("CANCELLED", "SUCCEEDED")
    complete = [t for t in trials if t.status == "COMPLETE"]
    best = min(complete, key=lambda t: t.values["best_valid_loss"])

    report = stub.GetReport(pb.GetReportRequest(experiment_id=experiment.id), timeout=60).report
    assert report.rows[0].label == f"trial {best.number}"
    assert report.rows[0].mean["best_valid_loss"] == best.values["best_valid_loss"]
    assert json.loads(report.json)["best_trial"] == best.number
    assert {p.name for p in report.plots} >= {"history", "loss_curves"}
    assert f"**Best: trial {best.number}**" in report.markdown


# ---- 3. resume after the comparator is killed ----


def _comparator_process(system: System, log_path: Path) -> subprocess.Popen:
    values = system.comparator_values()
    env = {**os.environ, "PYTHONPATH": str(REPO / "protos") + os.pathsep + str(REPO)}
    env.update({f"PEFTLAB_{k.upper()}": str(v) for k, v in values.items() if k != "port"})
    env["PEFTLAB_COMPARATOR_PORT"] = str(values["port"])
    return subprocess.Popen(
        [sys.executable, "-m", "services.comparator"],
        cwd=REPO,
        env=env,
        stdout=open(log_path, "ab"),
        stderr=subprocess.STDOUT,
    )


def test_study_resumes_after_the_comparator_is_killed(redis_url, redis_prefix, chat_data, tmp_path, store):
    system = System(redis_url, redis_prefix, chat_data, tmp_path, trainers=1, comparator=False)
    log_path = tmp_path / "comparator.log"
    process = _comparator_process(system, log_path)
    try:
        stub = system.stub()
        request = pb.StartStudyRequest(
            base=spec_to_proto({**BASE, "data": system.data, "test_samples": 0}),
            space=_space(LR),
            n_trials=3,
            parallelism=1,
            seed=5,
        )
        experiment = wait_for(
            lambda: _try(lambda: stub.StartStudy(request, timeout=10).experiment),
            timeout=60,
            what="comparator up",
        )
        experiments = system.experiments()
        wait_for(
            lambda: (
                [t.status for t in experiments.trials(experiment.id)][:2] == ["COMPLETE", "RUNNING"]
                and experiments.trials(experiment.id)[1].run_id
            ),
            timeout=120,
            what="one trial done, the next running",
        )
        before = {t.number: t.run_id for t in experiments.trials(experiment.id)}
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        assert experiments.status_of(experiment.id) == "RUNNING"
        process = _comparator_process(system, log_path)
        ended = _wait_ended(stub, experiment.id)
        assert ended.status == pb.EXPERIMENT_STATUS_SUCCEEDED, ended.error.message
        trials = experiments.trials(experiment.id)
        assert len(trials) == 3 and all(t.status == "COMPLETE" for t in trials)
        assert {n: trials[n].run_id for n in before} == before  # finished and running trials kept their runs
        assert len({t.run_id for t in trials}) == 3 and len(ended.run_ids) == 3
        runs, _ = store.list_runs(experiment_id=experiment.id)
        assert len(runs) == 3  # nothing was submitted twice
        assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 3
        assert "driving experiment" in log_path.read_text()
    finally:
        process.kill()
        process.wait(10)
        system.stop()


def _try(call):
    try:
        return call()
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            return None
        raise


# ---- 4. every trial fails ----


def test_study_whose_trials_all_fail_ends_failed_with_the_reason(system):
    stub = system.stub()
    budget = optimizer_pb2.Parameter(
        name="memory_budget_gb", float_range=optimizer_pb2.FloatRange(low=1e-7, high=1e-5, log=True)
    )
    request = pb.StartStudyRequest(
        base=spec_to_proto({**BASE, "data": system.data}), space=_space(budget), n_trials=3, parallelism=2
    )
    experiment = stub.StartStudy(request, timeout=30).experiment
    ended = _wait_ended(stub, experiment.id, timeout=120)
    assert ended.status == pb.EXPERIMENT_STATUS_FAILED
    assert ended.error.code == "RESOURCE_EXHAUSTED"
    assert "all 3 trials failed" in ended.error.message and "memory_budget_gb" in ended.error.message
    assert [t.status for t in ended.trials] == [optimizer_pb2.TRIAL_STATUS_FAILED] * 3
    report = stub.GetReport(pb.GetReportRequest(experiment_id=experiment.id), timeout=60).report
    assert len(report.failures) == 3 and "all 3 trials failed" in report.markdown


# ---- 5. the PyTorch backend beside MLX ----


def test_comparison_puts_mlx_and_pytorch_side_by_side(redis_url, redis_prefix, chat_data, tmp_path, store):
    if importlib.util.find_spec("peft") is None:  # an optional extra for users; make test installs it
        pytest.fail(
            "the PyTorch backend is not installed: run `make torch-extra` (make test does)", pytrace=False
        )
    system = System(redis_url, redis_prefix, chat_data, tmp_path, trainers=1)
    try:
        stub = system.stub()
        lora = spec_to_proto({"method": "lora"})
        arms = [
            pb.ComparisonArm(name="mlx", overrides=lora),
            pb.ComparisonArm(name="torch", overrides=lora, backend="torch"),
        ]
        base = spec_to_proto({**BASE, "data": system.data})
        experiment = stub.StartComparison(
            pb.StartComparisonRequest(base=base, arms=arms), timeout=30
        ).experiment
        ended = _wait_ended(stub, experiment.id)
        assert ended.status == pb.EXPERIMENT_STATUS_SUCCEEDED, ended.error.message
        report = stub.GetReport(pb.GetReportRequest(experiment_id=experiment.id), timeout=60).report
        rows = {r.label: r for r in report.rows}
        assert rows["mlx"].backend == "mlx" and rows["torch"].backend == "torch" and rows["torch"].n == 1
        mlx_run = store.get_run(rows["mlx"].run_ids[0])
        torch_id = rows["torch"].run_ids[0]
        local = system.experiments().local_runs(experiment.id)[torch_id]
        result = json.loads((Path(local.run_dir) / "result.json").read_text())
        assert rows["torch"].mean["best_valid_loss"] == pytest.approx(result["best_valid_loss"])
        assert rows["torch"].mean["tokens_per_second"] == pytest.approx(result["tokens_per_second"])
        # The same model, adapters and batches: the same trainable parameters and the same starting loss.
        assert result["trainable_parameters"] == mlx_run.metrics["trainable_parameters"]
        curves = json.loads(report.json)["curves"]
        assert curves["torch"]["valid"][0][1] == pytest.approx(curves["mlx"]["valid"][0][1], rel=1e-3)
        assert local.started_at >= mlx_run.finished_at  # never overlapping the MLX runs it is timed against
        assert any("PyTorch arms ran on the comparator's machine" in n for n in report.notes)
    finally:
        system.stop()
