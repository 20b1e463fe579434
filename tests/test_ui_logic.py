"""The UI's pure parts, on messages built here: a run's event feed (incremental, resumable), progress and
ETA, the report's confidence intervals, studies (space, best so far, the best configuration's spec), the
forms' checks, and the error messages people read."""

from __future__ import annotations

import math

import grpc
import pytest
from peftlab.v1 import common_pb2, comparator_pb2, optimizer_pb2
from scipy import stats

from ui import client, feed, reports


def _step(event_id: str, step: int, loss: float, seconds: float = 0.5) -> common_pb2.RunEvent:
    event = common_pb2.RunEvent(id=event_id, run_id="r-1")
    event.step.CopyFrom(
        common_pb2.StepMetrics(
            step=step, total_steps=10, train_loss=loss, step_seconds=seconds, tokens_per_second=100
        )
    )
    return event


def test_feed_takes_each_event_once_and_keeps_the_last_id():
    f = feed.RunFeed("r-1")
    started = common_pb2.RunEvent(
        id="1-0", started=common_pb2.RunStarted(backend="cpu", predicted_peak_memory_bytes=7)
    )
    evaluation = common_pb2.RunEvent(
        id="3-0", eval=common_pb2.EvalMetrics(step=1, valid_loss=2.0, valid_perplexity=7.39)
    )
    assert f.add([started, _step("2-0", 1, 3.0), evaluation]) == 3
    assert f.add([_step("2-0", 1, 3.0), _step("4-0", 2, 2.5)]) == 1  # a repeated event is skipped
    assert f.last_event_id == "4-0" and f.predicted_peak_bytes == 7 and f.backend == "cpu"
    assert [r["step"] for r in f.steps] == [1, 2]
    assert f.steps[0]["train_perplexity"] == pytest.approx(math.exp(3.0))
    curves = f.curves()
    assert {(r["series"], r["step"]) for r in curves} == {("train", 1), ("train", 2), ("valid", 1)}
    # Ids compare as numbers: 10-0 comes after 9-0.
    assert f.add([_step("10-0", 3, 2.2)]) == 1 and f.add([_step("9-0", 9, 0.1)]) == 0


def test_feed_after_a_resume_replaces_the_replayed_steps():
    f = feed.RunFeed("r-1")
    f.add([_step(f"{i}-0", i, 10.0 - i) for i in range(1, 6)])
    resumed = common_pb2.RunEvent(id="6-0", started=common_pb2.RunStarted(resume_step=3))
    f.add([resumed, _step("7-0", 4, 1.0)])  # the checkpoint was at step 3: steps 4-5 run again
    assert [(r["step"], r["train_loss"]) for r in f.steps] == [(1, 9.0), (2, 8.0), (3, 7.0), (4, 1.0)]
    assert "resuming from step 3" in f.logs[-1]


def test_feed_logs_statuses_errors_and_the_result():
    f = feed.RunFeed("r-1")
    failed = common_pb2.RunEvent(id="1-0")
    failed.status.status = common_pb2.RUN_STATUS_FAILED
    failed.status.error.message = "out of memory"
    result = common_pb2.RunEvent(id="2-0", result=common_pb2.RunMetrics(status="succeeded", steps=10))
    f.add([failed, result])
    assert "status FAILED: out of memory" in f.logs[0]
    assert f.metrics().steps == 10


def test_progress_and_eta():
    assert feed.progress([], 10) == feed.Progress(0, 10, 0.0, None)
    steps = [{"step": i, "total_steps": 10, "step_seconds": 2.0} for i in range(1, 5)]
    p = feed.progress(steps, 10)
    assert (p.step, p.total, p.fraction, p.eta_seconds) == (4, 10, 0.4, 12.0)
    assert p.label() == "step 4 of 10 · about 12s left"
    done = feed.progress([*steps, {"step": 10, "total_steps": 10, "step_seconds": 2.0}], 10)
    assert done.eta_seconds is None and done.label() == "step 10 of 10"  # not "about 0s left"


def test_report_cells_clip_intervals_and_read_as_people_write_numbers():
    """Two seeds: a time's interval clipped at 0, exact match as a percentage, a perplexity in full, the Pareto
    axes from 0 with rounded labels (the new user's findings)."""
    from ui import charts, formatting

    row = comparator_pb2.ReportRow(label="lora", n=2, run_ids=["a", "b"])
    row.mean.update({"wall_seconds": 216.480816, "task.exact_match": 0.25, "best_valid_loss": 1.5})
    row.mean["peak_memory_bytes"] = 2e8
    row.ci95.update({"wall_seconds": 225.1, "task.exact_match": 0.9, "best_valid_loss": 0.1})
    (cells,) = reports.report_table(comparator_pb2.Report(rows=[row]))
    assert cells["time (s)"] == "216 [0, 442]"
    assert cells["exact match"] == "25% [0%, 100%]"
    assert formatting.number(18440.2) == "18,440" and formatting.number(1.84444) == "1.844"
    chart = charts.pareto(reports.pareto_rows(comparator_pb2.Report(rows=[row]))).to_dict()
    x = chart["layer"][0]["encoding"]["x"]
    assert x["scale"]["zero"] is True and x["axis"]["format"] == ",.0f"


def test_confidence_interval_is_student_t():
    low, high = reports.confidence_interval(1.0, 0.2, 5)
    half = stats.t.ppf(0.975, 4) * 0.2 / math.sqrt(5)
    assert (low, high) == pytest.approx((1.0 - half, 1.0 + half))
    assert reports.confidence_interval(1.0, 0.2, 1) is None


def test_report_bars_and_pareto_from_rows():
    report = comparator_pb2.Report()
    report.rows.add(
        label="a", run_ids=["1"], mean={"wall_seconds": 3.0, "best_valid_loss": 1.0, "peak_memory_bytes": 2e9}
    )
    report.rows.add(label="b", run_ids=["2", "3"], mean={"wall_seconds": 5.0}, std={"wall_seconds": 1.0})
    bars = reports.bar_rows(report, "wall_seconds")
    assert bars[0] == {"label": "a", "mean": 3.0, "low": 3.0, "high": 3.0}
    assert bars[1]["low"] < 5.0 < bars[1]["high"]
    assert reports.pareto_rows(report) == [
        {
            "label": "a",
            "best_valid_loss": 1.0,
            "wall_seconds": 3.0,
            "peak_memory_gb": 2.0,
            "front": "dominated",
        }
    ]
    experiment = comparator_pb2.Experiment(run_ids=["1", "2", "3", "4"])
    assert reports.run_labels(report, experiment) == {"1": "a", "2": "b", "3": "b", "4": "4"}


def _form(**changes) -> reports.StudyForm:
    values = dict(
        name="s", model="tiny-llama", data="chat", iters=40, methods=("lora", "full"), n_trials=6, parallelism=2,
        objective="best_valid_loss", pruning=True,
    )  # fmt: skip
    return reports.StudyForm(**{**values, **changes})


def test_study_request_carries_the_given_space_and_the_form():
    space = optimizer_pb2.SearchSpace()
    space.parameters.add(
        name="learning_rate", float_range=optimizer_pb2.FloatRange(low=1e-4, high=1e-2, log=True)
    )
    rank = space.parameters.add(name="rank", int_range=optimizer_pb2.IntRange(low=2, high=128, log=True))
    rank.condition.parent = "method"
    rank.condition.values.add(string_value="lora")
    asked = reports.default_space_request(_form())
    assert list(asked.methods) == ["lora", "full"] and asked.total_steps == 40
    request = reports.study_request(_form(methods=("dora",)), space)
    assert request.space == space
    assert (
        request.base.method == "dora"
        and request.objectives[0].direction == optimizer_pb2.StudyObjective.MINIMIZE
    )
    assert reports.describe_space(space) == [
        "learning_rate: 0.0001 to 0.01 (log)",
        "rank: 2 to 128 (log) (when method is lora)",
    ]


def test_form_checks():
    assert reports.check_study(_form()) == []
    problems = reports.check_study(_form(methods=(), iters=0, parallelism=9, objective="nope"))
    assert len(problems) == 4
    comparison = reports.ComparisonForm("c", "tiny-llama", "chat", 10, (), 8, 0)
    assert reports.check_comparison(comparison) == [
        "Pick at least one method to compare.",
        "Seeds must be between 1 and 32.",
    ]
    request = reports.comparison_request(reports.ComparisonForm("c", "m", "d", 10, ("lora", "full"), 4, 3))
    assert [a.name for a in request.arms] == ["lora-r4", "full"] and list(request.seeds) == [0, 1, 2]
    assert request.arms[0].overrides.alpha == 8.0
    # The engine's defaults (warmup 10% of the steps, a learning rate per method) apply: nothing is set.
    assert not request.base.HasField("warmup_steps")
    assert not any(a.overrides.HasField("learning_rate") for a in request.arms)
    study = reports.study_request(_form(), optimizer_pb2.SearchSpace())
    assert study.base.test_samples == 0  # scoring the test split only pays for an exact-match objective
    assert (
        reports.study_request(
            _form(objective="task.exact_match"), optimizer_pb2.SearchSpace()
        ).base.test_samples
        == 20
    )


def test_best_trial_and_its_spec():
    experiment = comparator_pb2.Experiment()
    experiment.study.base.model = "tiny-llama"
    experiment.study.base.iters = 30
    experiment.study.objectives.add(name="task.exact_match", direction=optimizer_pb2.StudyObjective.MAXIMIZE)
    for i, (status, value) in enumerate(
        [(optimizer_pb2.TRIAL_STATUS_COMPLETE, 0.2), (optimizer_pb2.TRIAL_STATUS_FAILED, None),
         (optimizer_pb2.TRIAL_STATUS_COMPLETE, 0.6), (optimizer_pb2.TRIAL_STATUS_PRUNED, 0.9)]
    ):  # fmt: skip
        trial = experiment.trials.add(trial_id=f"r-{i}", status=status)
        trial.params["rank"].int_value = 4 * (i + 1)
        trial.params["method"].string_value = "lora"
        trial.params["not_a_spec_field"].float_value = 1.0
        if value is not None:
            trial.values["task.exact_match"] = value
    assert reports.best_so_far(experiment) == [
        {"trial": 0, "value": 0.2, "best so far": 0.2},
        {"trial": 2, "value": 0.6, "best so far": 0.6},
        {"trial": 3, "value": 0.9, "best so far": 0.9},
    ]
    best = reports.best_trial(experiment)  # pruned trials do not count as the best configuration
    assert best.trial_id == "r-2"
    assert reports.trial_spec(experiment, best) == {
        "model": "tiny-llama", "iters": 30, "rank": 12, "method": "lora", "alpha": 24.0,
    }  # fmt: skip
    assert [row["status"] for row in reports.trials_table(experiment)] == [
        "COMPLETE",
        "FAILED",
        "COMPLETE",
        "PRUNED",
    ]


@pytest.mark.parametrize(
    ("code", "details", "token", "expected"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "spec.rank: must be between 1 and 1024, got 0", "",
         "spec.rank: must be between 1 and 1024, got 0"),
        (grpc.StatusCode.UNAUTHENTICATED, "missing token", "", "The gateway needs an API token"),
        (grpc.StatusCode.UNAUTHENTICATED, "bad token", "x", "The gateway refused the API token"),
        (grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!", "", "Starting the study: not supported yet"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "", "", "Starting the study took too long"),
        (grpc.StatusCode.INTERNAL, "internal error", "", "Starting the study failed inside the service"),
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses", "",
         "Starting the study failed: the gateway cannot reach the service behind it"),
    ],
)  # fmt: skip
def test_error_messages_read_as_sentences(monkeypatch, code, details, token, expected):
    monkeypatch.setenv("PEFTLAB_API_TOKEN", token)
    assert client.GatewayError(code, details, "StartStudy").message.startswith(expected)


def test_parallel_coordinates_label_each_axis_and_show_missing_values_as_a_dash():
    from ui import charts

    rows = [
        {"trial": 0, "status": "COMPLETE", "learning_rate": 0.001, "rank": 8, "method": "lora", "loss": 2.25},
        {"trial": 1, "status": "RUNNING", "learning_rate": 0.003, "rank": 16, "method": "dora", "loss": None},
        {"trial": 2, "status": "COMPLETE", "learning_rate": 0.01, "rank": 4, "method": "lora", "loss": 1.5},
    ]
    spec = charts.parallel_coordinates(rows, ["learning_rate", "rank", "method", "loss"], "loss").to_dict()
    lines, ticks = (spec["datasets"][layer["data"]["name"]] for layer in spec["layer"])
    labels = {(t["axis"], t["position"]): t["label"] for t in ticks}
    assert labels == {
        ("learning_rate", 0.0): "0.001", ("learning_rate", 1.0): "0.01", ("rank", 0.0): "4", ("rank", 1.0): "16",
        ("method", 0.0): "dora", ("method", 1.0): "lora", ("loss", 0.0): "1.5", ("loss", 1.0): "2.25",
    }  # fmt: skip
    running = {r["axis"]: r["value"] for r in lines if r["trial"] == 1}
    assert running == {"learning_rate": "0.003", "rank": "16", "method": "dora", "loss": "-"}
    assert all(r["value"] not in ("None", "nan") for r in lines)
